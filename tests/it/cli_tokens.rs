//! `berth token rotate` and `berth token remove` through a running server, empty lists, and
//! what the audit trail keeps of a login with a name that is no account.

use std::time::{Duration, Instant};

use berth::db::{self, Db, audit};

use crate::cli_accounts::{berth, fails, ok, status};
use crate::common::{Server, basic};

fn audit_entries(server: &Server) -> Vec<audit::Entry> {
    let db = Db::open(
        &server.data_dir.join("berth.db"),
        db::Durability::ProcessCrash,
    )
    .unwrap();
    db.read_blocking(|c| audit::recent(c, 50)).unwrap()
}

#[test]
fn rotate_and_remove_tokens_while_the_server_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &[]);
    let o = berth(&data, &["token", "list"], None);
    assert_eq!(ok(&o).trim(), "no tokens");
    let o = berth(&data, &["anonymous", "list"], None);
    assert_eq!(ok(&o), "", "stdout stays a list");
    assert!(String::from_utf8_lossy(&o.stderr).contains("no repository is open"));

    let first = ok(&berth(
        &data,
        &[
            "token", "create", "--user", "admin", "--name", "ci", "--scope", "**:pull",
        ],
        None,
    ));
    let old = basic("ci", first.trim());
    assert_eq!(status(&server, "/v2/", &old), 200);

    let second = ok(&berth(&data, &["token", "rotate", "ci"], None));
    let second = second.trim();
    assert!(second.starts_with("berth_rt_") && second != first.trim());
    let new = basic("ci", second);
    assert_eq!(
        status(&server, "/v2/", &old),
        401,
        "the old secret is refused at once"
    );
    assert_eq!(status(&server, "/v2/", &new), 200);
    let listed = ok(&berth(&data, &["token", "list"], None));
    assert!(
        listed.contains("ci ") && listed.contains("**:pull") && listed.contains("active"),
        "{listed}"
    );

    fails(
        &berth(&data, &["token", "remove", "ci"], None),
        "still active",
    );
    fails(
        &berth(&data, &["token", "rotate", "nope"], None),
        "no token named",
    );
    ok(&berth(&data, &["token", "revoke", "ci"], None));
    fails(
        &berth(&data, &["token", "rotate", "ci"], None),
        "revoked or expired",
    );
    ok(&berth(&data, &["token", "remove", "ci"], None));
    assert_eq!(
        ok(&berth(&data, &["token", "list"], None)).trim(),
        "no tokens"
    );
    // The name is free again.
    ok(&berth(
        &data,
        &[
            "token", "create", "--user", "admin", "--name", "ci", "--scope", "**:pull",
        ],
        None,
    ));
    let actions: Vec<String> = audit_entries(&server)
        .into_iter()
        .map(|e| e.action)
        .collect();
    for a in ["token.rotate", "token.remove"] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
}

#[test]
fn a_name_that_is_no_account_is_not_audited_as_typed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let typed = "Hunter2-typed-in-the-name-field";
    assert_eq!(status(&server, "/v2/", &basic(typed, "x")), 401);
    assert_eq!(status(&server, "/v2/", &basic("admin", "wrong")), 401);
    let deadline = Instant::now() + Duration::from_secs(5);
    let failed = loop {
        let failed: Vec<audit::Entry> = audit_entries(&server)
            .into_iter()
            .filter(|e| e.action == "login.failed")
            .collect();
        if failed.len() >= 2 || Instant::now() > deadline {
            break failed;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let actors: Vec<String> = failed.iter().filter_map(|e| e.actor.clone()).collect();
    assert_eq!(actors.len(), 2, "{actors:?}");
    assert!(actors.contains(&"admin".to_string()), "{actors:?}");
    assert!(
        actors.iter().any(|a| a.starts_with("(unknown name ")),
        "{actors:?}"
    );
    for e in &failed {
        assert!(!format!("{e:?}").contains("Hunter2"), "{e:?}");
    }
}
