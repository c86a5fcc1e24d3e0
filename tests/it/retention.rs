//! Retention policies over the real router and database: preview against run, sibling tags,
//! drafts, floors, scale; and the `berth retention` commands against the real binary.

use std::process::Command;

use berth::core::gc::Trigger;
use berth::core::retention::{self, PolicySpec, RetentionReport, Which};
use serde_json::json;

use crate::common::cmd::{expect_failure, output, run};
use crate::common::{OCI_MANIFEST, Server, TestApp, digest_of};

fn spec(toml: &str) -> PolicySpec {
    PolicySpec::from_toml(toml).unwrap()
}

async fn apply(app: &TestApp, which: Which, dry_run: bool, force: bool) -> RetentionReport {
    app.state
        .registry
        .apply_retention(which, Trigger::Cli, dry_run, force)
        .await
        .unwrap()
}

async fn tags(app: &TestApp, repo: &str) -> Vec<String> {
    let r = app.get(&format!("/v2/{repo}/tags/list")).await;
    if r.status == 404 {
        return Vec::new();
    }
    r.json()["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

const CI: &str = r#"
name = "ci"
repositories = ["team/*"]
[keep]
any = [
  { tag = "latest" },
  { newest = 2, per = "^([a-z]+)-[0-9a-f]{7}$" },
]
"#;

#[tokio::test]
async fn preview_lists_what_the_run_deletes_and_siblings_stay() {
    let app = TestApp::new();
    // Six builds per branch, pushed a minute apart; `latest` on the newest main build; one
    // image tagged twice (an old build and `stable`).
    let mut n = 0u8;
    for i in 0..6 {
        for branch in ["main", "dev"] {
            n += 1;
            let tag = format!("{branch}-{:07x}", 0xabc000 + i);
            app.push_image("team/app", &tag, OCI_MANIFEST, n).await;
            app.clock.advance(60);
        }
    }
    let first = app.get("/v2/team/app/manifests/main-0abc000").await;
    app.put_manifest("team/app", "stable", OCI_MANIFEST, &first.body)
        .await
        .assert(201);
    app.put_manifest(
        "team/app",
        "latest",
        OCI_MANIFEST,
        &app.get("/v2/team/app/manifests/main-0abc005").await.body,
    )
    .await
    .assert(201);
    // Another repository the policy does not govern.
    app.push_image("other/app", "old", OCI_MANIFEST, 99).await;
    retention::save(app.state.registry.db(), 0, spec(CI))
        .await
        .unwrap();

    let preview = apply(&app, Which::Saved, true, true).await;
    // Every tag of the governed repository is listed, with a reason.
    assert_eq!(preview.decisions.len(), 14);
    assert!(preview.decisions.iter().all(|d| d.repo == "team/app"));
    let deleted: Vec<&str> = preview
        .decisions
        .iter()
        .filter(|d| d.delete)
        .map(|d| d.tag.as_str())
        .collect();
    assert_eq!(deleted.len(), 9, "{deleted:?}");
    assert!(deleted.contains(&"stable"), "no keep rule names stable");
    let reason = |tag: &str| {
        preview
            .decisions
            .iter()
            .find(|d| d.tag == tag)
            .unwrap()
            .reason
            .clone()
    };
    assert_eq!(reason("latest"), "kept: tag matches latest");
    assert_eq!(
        reason("dev-0abc005"),
        "kept: newest 2 by push per ^([a-z]+)-[0-9a-f]{7}$"
    );
    assert_eq!(reason("main-0abc001"), "no keep rule holds");
    // The preview changed nothing.
    assert_eq!(tags(&app, "team/app").await.len(), 14);
    // Eight images lose their last tag (main-0abc000 and stable share one): their own layers
    // and configs are what goes.
    assert!(preview.bytes_to_free > 0);

    // The run deletes exactly the previewed tags, and the share limit stops it unforced.
    let stopped = apply(&app, Which::Saved, false, false).await;
    assert_eq!(stopped.deleted, 0);
    assert!(
        stopped
            .summary()
            .contains("stopped by max_delete_share in team/app")
    );
    let run = apply(&app, Which::Saved, false, true).await;
    assert_eq!(run.deleted, 9);
    let mut left = tags(&app, "team/app").await;
    left.sort();
    assert_eq!(
        left,
        [
            "dev-0abc004",
            "dev-0abc005",
            "latest",
            "main-0abc004",
            "main-0abc005"
        ]
    );
    assert_eq!(tags(&app, "other/app").await, ["old"]);
    // Deleting a tag leaves the sibling's manifest alone: `latest` still points at the image
    // main-0abc005 is, and untagging removed no manifest.
    app.get("/v2/team/app/manifests/latest").await.assert(200);
    let d = digest_of(&first.body);
    app.get(&format!("/v2/team/app/manifests/{d}"))
        .await
        .assert(200);
}

#[tokio::test]
async fn a_draft_previews_without_saving_and_min_keep_holds() {
    let app = TestApp::new();
    for i in 0..4u8 {
        app.push_image("r", &format!("v{i}"), OCI_MANIFEST, i + 1)
            .await;
        app.clock.advance(10);
    }
    let draft = spec(
        "name = \"draft\"\nrepositories = [\"**\"]\nmin_keep = 2\nmax_delete_share = 1.0\n[keep]\ntag = \"nothing\"",
    );
    // A pull by the test's robot token is recorded with its name; berth's own reads are not.
    app.get("/v2/r/manifests/v3").await.assert(200);
    let preview = apply(&app, Which::Draft(Box::new(draft.clone())), true, false).await;
    let v = |tag: &str| {
        preview
            .decisions
            .iter()
            .find(|d| d.tag == tag)
            .unwrap()
            .clone()
    };
    assert_eq!(v("v3").pulled_by.as_deref(), Some("test-robot"));
    assert_eq!(v("v3").pulled_at, Some(app.state.registry.now()));
    assert_eq!(v("v0").pulled_at, None);
    let again = apply(&app, Which::Draft(Box::new(draft.clone())), true, false).await;
    assert!(
        again
            .decisions
            .iter()
            .filter(|d| d.tag != "v3")
            .all(|d| d.pulled_at.is_none())
    );
    let kept: Vec<&str> = preview
        .decisions
        .iter()
        .filter(|d| !d.delete)
        .map(|d| d.tag.as_str())
        .collect();
    assert_eq!(kept, ["v2", "v3"]);
    assert_eq!(tags(&app, "r").await.len(), 4);
    assert!(
        retention::list(app.state.registry.db())
            .await
            .unwrap()
            .is_empty()
    );
    // Running the saved policy does what its preview said.
    retention::save(app.state.registry.db(), 0, draft.clone())
        .await
        .unwrap();
    let run = apply(&app, Which::Named("draft".into()), false, false).await;
    assert_eq!(run.deleted, 2);
    assert_eq!(tags(&app, "r").await, ["v2", "v3"]);
    // A draft is only ever previewed.
    let err = app
        .state
        .registry
        .apply_retention(
            Which::Draft(Box::new(draft.clone())),
            Trigger::Cli,
            false,
            false,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("a draft can only be previewed"));
    // A name no policy has is an error, not an empty run.
    let err = app
        .state
        .registry
        .apply_retention(Which::Named("nope".into()), Trigger::Cli, true, false)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no retention policy named \"nope\"")
    );
}

#[tokio::test]
async fn twenty_thousand_tags_all_appear_in_the_preview() {
    let app = TestApp::with_config(|c| c.durability = berth::config::Durability::ProcessCrash);
    let config = app.push_blob("big/r0", b"{}").await;
    let body = serde_json::to_vec(&json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":config,"size":2},
        "layers":[]}))
    .unwrap();
    // One image under 100 tags in each of 200 repositories.
    for r in 0..200 {
        let repo = format!("big/r{r}");
        if r > 0 {
            app.call(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/?mount={config}&from=big/r0"),
                &[],
                axum::body::Body::empty(),
            )
            .await
            .assert(201);
        }
        for t in 0..100 {
            app.put_manifest(&repo, &format!("build-{t}"), OCI_MANIFEST, &body)
                .await
                .assert(201);
        }
    }
    let draft = spec("name = \"d\"\nrepositories = [\"big/*\"]\n[keep]\nnewest = 10");
    let started = std::time::Instant::now();
    let preview = apply(&app, Which::Draft(Box::new(draft)), true, true).await;
    eprintln!("preview of 20,000 tags: {:?}", started.elapsed());
    assert_eq!(preview.decisions.len(), 20_000);
    assert_eq!(preview.deleted, 18_000);
    // Every tag keeps the one image: deleting tags frees nothing.
    assert_eq!(preview.bytes_to_free, 0);
}

#[test]
fn retention_commands_on_the_real_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &[("BERTH_GC__ENABLED", "false")]);
    let berth = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.arg("--data-dir")
            .arg(&data)
            .args(args)
            .env_remove("BERTH_CONFIG");
        c
    };
    let file = tmp.path().join("ci.toml");
    std::fs::write(&file, CI).unwrap();
    let f = file.to_str().unwrap();
    assert!(
        run(&mut berth(&["retention", "add", "--file", f]))
            .contains("added retention policy \"ci\"")
    );
    assert!(run(&mut berth(&["retention", "add", "--file", f])).contains("replaced"));
    assert!(run(&mut berth(&["retention", "list"])).starts_with("ci\tteam/*"));
    let shown = run(&mut berth(&["retention", "show", "ci"]));
    assert_eq!(PolicySpec::from_toml(&shown).unwrap(), spec(CI));
    // Previews and runs go through the running server.
    let out = run(&mut berth(&["retention", "preview", "--json"]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["dry_run"], true);
    assert!(run(&mut berth(&["retention", "run"])).contains("deleted 0 of 0 tags"));
    // Mistakes are one line and a failure.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\nrepositories = [\"**\"]\n[keep]\nnewest = 0\n",
    )
    .unwrap();
    let mut c = berth(&["retention", "add", "--file", bad.to_str().unwrap()]);
    let o = output(&mut c);
    let err = expect_failure(&c, &o);
    assert!(err.contains("keep.newest: keep at least 1"), "{err}");
    let mut c = berth(&["retention", "remove", "nope"]);
    let o = output(&mut c);
    assert!(expect_failure(&c, &o).contains("no retention policy named \"nope\""));
    assert!(run(&mut berth(&["retention", "remove", "ci"])).contains("removed"));
    drop(server);
}

#[tokio::test]
async fn bytes_to_free_count_only_what_collection_will_remove() {
    let app = TestApp::new();
    let (_, child) = app.push_image("m", "amd64-1.0", OCI_MANIFEST, 7).await;
    let index = serde_json::to_vec(
        &json!({"schemaVersion":2,"mediaType":crate::common::OCI_INDEX,
        "manifests":[{"mediaType":OCI_MANIFEST,"digest":child,"size":1}]}),
    )
    .unwrap();
    app.put_manifest("m", "1.0", crate::common::OCI_INDEX, &index)
        .await
        .assert(201);
    let (_, lone) = app.push_image("m", "old", OCI_MANIFEST, 8).await;
    let draft = spec(
        "name = \"d\"\nrepositories = [\"m\"]\nmin_keep = 0\nmax_delete_share = 1.0\n[keep]\ntag = \"1\\\\.0\"",
    );
    let preview = apply(&app, Which::Draft(Box::new(draft)), true, false).await;
    assert_eq!(preview.deleted, 2, "{:?}", preview.decisions);
    // The platform image stays under the kept index: only `old`'s config and layer go.
    let m = app.get(&format!("/v2/m/manifests/{lone}")).await.json();
    let sizes: u64 = [&m["config"]["size"], &m["layers"][0]["size"]]
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(preview.bytes_to_free, sizes);
}
