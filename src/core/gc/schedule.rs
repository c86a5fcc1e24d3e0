//! When the server collects on its own: every `interval`, and with a daily window only while
//! inside it. Runs start on the server's clock; a run in progress at shutdown stops after
//! its current batch.

use std::time::Duration;

use tokio::sync::watch;

use super::Trigger;
use crate::core::Registry;
use crate::core::retention::Which;

const DAY: i64 = 86_400;

/// The first start at or after `after + interval` that falls inside `window` (seconds after
/// midnight UTC, start inclusive, end exclusive; it may cross midnight).
pub fn next_run(after: i64, interval: i64, window: Option<(u32, u32)>) -> i64 {
    let t = after + interval;
    let Some((start, end)) = window else {
        return t;
    };
    let (start, end) = (i64::from(start), i64::from(end));
    let s = t.rem_euclid(DAY);
    let inside = if start < end {
        (start..end).contains(&s)
    } else {
        s >= start || s < end
    };
    if inside {
        return t;
    }
    let day = t - s;
    if day + start > t {
        day + start
    } else {
        day + DAY + start
    }
}

/// Collect on schedule until `stop` turns true.
pub async fn run(
    registry: Registry,
    interval: i64,
    window: Option<(u32, u32)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = registry.now();
    loop {
        let next = next_run(last, interval, window);
        let wait = Duration::from_secs((next - registry.now()).max(0) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // Saved retention policies first: what they untag is collected once its grace ends.
        match registry
            .apply_retention(Which::Saved, Trigger::Schedule, false, false)
            .await
        {
            Ok(r) if r.decisions.is_empty() => {}
            Ok(r) => tracing::info!(deleted = r.deleted, "retention: {}", r.summary()),
            Err(e) => tracing::warn!(error = %e, "scheduled retention failed"),
        }
        let run = registry.collect_garbage(Trigger::Schedule, false);
        tokio::pin!(run);
        let finished = tokio::select! {
            r = &mut run => Some(r),
            _ = stop.wait_for(|s| *s) => None,
        };
        let result = match finished {
            Some(r) => r,
            None => {
                // Let the run end at its next batch boundary, then stop.
                registry.stop_collecting();
                run.await
            }
        };
        match result {
            Ok(r) => r.log(),
            Err(e) => tracing::warn!(error = %e, "scheduled garbage collection failed"),
        }
        last = registry.now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        let day0 = 20_000 * DAY;
        // No window: every interval.
        assert_eq!(next_run(day0, 3600, None), day0 + 3600);
        // 02:00-05:00: an hour after 01:30 is 02:30, inside.
        let w = Some((2 * 3600, 5 * 3600));
        assert_eq!(next_run(day0 + 5400, 3600, w), day0 + 9000);
        // An hour after 00:00 is 01:00: wait for 02:00.
        assert_eq!(next_run(day0, 3600, w), day0 + 7200);
        // An hour after 04:30 is 05:30: tomorrow at 02:00.
        assert_eq!(next_run(day0 + 16_200, 3600, w), day0 + DAY + 7200);
        // A window across midnight, 22:00-04:00.
        let w = Some((22 * 3600, 4 * 3600));
        assert_eq!(next_run(day0 + 22 * 3600, 3600, w), day0 + 23 * 3600);
        assert_eq!(next_run(day0 + 2 * 3600, 3600, w), day0 + 3 * 3600);
        assert_eq!(next_run(day0 + 3 * 3600, 3600, w), day0 + 22 * 3600);
        // A daily interval with a window lands inside it each day.
        let w = Some((3 * 3600, 4 * 3600));
        assert_eq!(
            next_run(day0 + 3 * 3600 + 60, DAY, w),
            day0 + DAY + 3 * 3600 + 60
        );
    }
}
