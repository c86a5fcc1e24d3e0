-- berth schema 8: who pulled a manifest last (a user's or a robot token's name, or
-- `anonymous`), beside when: retention previews show it, and an image a cluster's pull token
-- still fetches is easy to tell from one nobody uses.
ALTER TABLE manifests ADD COLUMN last_pulled_by TEXT;

-- Retention reads a tag's push time from the tag; before this schema a tag pushed again with
-- the same manifest kept the time of its first push. Start each from the later of the two.
UPDATE tags SET updated_at = max(updated_at,
    (SELECT m.pushed_at FROM manifests m WHERE m.id = tags.manifest_id));
