//! What authentication costs berth: manifest GETs per second with CONNECTIONS connections
//! (the main table's workload, on the same manifests) without credentials on a repository
//! open to anonymous pulls, then with each kind of credentials clients send.
//!
//! Each mode has its own client, warmed by one untimed request, so the admin password's
//! argon2 check (cached by berth afterwards) happens before the clock starts. The modes take
//! turns for ROUNDS rounds and each reports its median round: a slow moment of the shared
//! machine then costs one round of every mode rather than one mode.

use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use base64::Engine as _;
use reqwest::StatusCode;

use crate::server::{ADMIN_PASSWORD, ROBOT, Server};
use crate::workloads::{self, MANIFEST_REPO, Manifests, Target};
use crate::{CONNECTIONS, ROUNDS, RPS_SECS, median};

/// Every authenticated mode should keep this share of the anonymous rate.
const TARGET_RATIO: f64 = 0.80;

/// The value of an `Authorization: Basic` header.
pub fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    format!("Basic {encoded}")
}

/// `GET /token` for pulls of MANIFEST_REPO with the robot's Basic credentials, as docker
/// does after a challenge; the `Authorization: Bearer` value.
async fn bearer(server: &Server, robot_secret: &str) -> Result<String> {
    let t = Target::new(server.base.clone(), Some(&basic(ROBOT, robot_secret)), 1)?;
    let path = format!("token?service=berth&scope=repository:{MANIFEST_REPO}:pull");
    let resp = t.http.get(t.base.join(&path)?).send().await?;
    ensure!(
        resp.status() == StatusCode::OK,
        "GET /{path}: expected 200, got {}",
        resp.status()
    );
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await?)?;
    let token = body["token"].as_str().context("GET /token: no \"token\"")?;
    Ok(format!("Bearer {token}"))
}

struct Mode {
    label: &'static str,
    target: Arc<Target>,
    /// Whether the single-request latency is measured too.
    latency: bool,
}

/// One mode's result.
pub struct Row {
    label: &'static str,
    /// The median round, requests/s.
    rps: f64,
    rounds: Vec<f64>,
    /// Median of one sequential GET per manifest, ms.
    median_ms: Option<f64>,
}

/// Run the section on a berth that already holds `manifests` and the robot token.
pub async fn section(
    server: &Server,
    robot_secret: &str,
    manifests: Arc<Manifests>,
) -> Result<Vec<Row>> {
    let (url, digest, len) = manifests.first().context("no manifests to read")?;
    let mode = |label, authorization: Option<String>, latency| -> Result<Mode> {
        let base = server.base.clone();
        let target = Arc::new(Target::new(base, authorization.as_deref(), CONNECTIONS)?);
        Ok(Mode {
            label,
            target,
            latency,
        })
    };
    let anonymous = mode("anonymous (repository open)", None, true)?;
    // Authentication is on: without credentials the repository is closed until opened.
    let status = anonymous
        .target
        .http
        .get(url.clone())
        .send()
        .await?
        .status();
    ensure!(
        status == StatusCode::UNAUTHORIZED,
        "GET {url} without credentials before `anonymous allow`: expected 401, got {status}"
    );
    server.berth_cli(&["anonymous", "allow", "bench/**"])?;
    let modes = [
        anonymous,
        mode("Basic, robot token", Some(basic(ROBOT, robot_secret)), true)?,
        mode(
            "Basic, admin password",
            Some(basic("admin", ADMIN_PASSWORD)),
            false,
        )?,
        mode(
            "Bearer from /token (pull scope)",
            Some(bearer(server, robot_secret).await?),
            true,
        )?,
    ];
    for m in &modes {
        workloads::get_manifest(&m.target, url.clone(), digest, *len)
            .await
            .with_context(|| format!("warm-up of {}", m.label))?;
    }

    let mut rounds = vec![Vec::with_capacity(ROUNDS); modes.len()];
    for round in 1..=ROUNDS {
        for (m, rates) in modes.iter().zip(&mut rounds) {
            let rps =
                workloads::manifest_get_rps(&m.target, manifests.clone(), CONNECTIONS, RPS_SECS)
                    .await
                    .with_context(|| m.label)?;
            eprintln!(
                "  auth round {round}/{ROUNDS}  {:<34} {rps:>8.0} req/s",
                m.label
            );
            rates.push(rps);
        }
    }
    let mut rows = Vec::with_capacity(modes.len());
    for (m, rates) in modes.iter().zip(rounds) {
        let median_ms = match m.latency {
            true => Some(
                workloads::manifest_get_latency(&m.target, &manifests)
                    .await?
                    .median,
            ),
            false => None,
        };
        rows.push(Row {
            label: m.label,
            rps: median(&rates),
            rounds: rates,
            median_ms,
        });
    }
    Ok(rows)
}

pub fn print(rows: &[Row]) {
    let Some(base) = rows.first().map(|r| r.rps) else {
        return;
    };
    println!(
        "\nauthentication (berth): manifest GET, {CONNECTIONS} conns, median of {ROUNDS} rounds \
         of {RPS_SECS} s"
    );
    println!(
        "{:<34}{:>9}{:>9}{:>13}   rounds (req/s)",
        "mode", "req/s", "ratio", "median (ms)"
    );
    for (i, row) in rows.iter().enumerate() {
        let ratio = row.rps / base;
        let ms = row.median_ms.map_or("-".into(), |v| format!("{v:.3}"));
        let rounds: Vec<String> = row.rounds.iter().map(|v| format!("{v:.0}")).collect();
        let below = if i > 0 && ratio < TARGET_RATIO {
            "   BELOW TARGET"
        } else {
            ""
        };
        println!(
            "{:<34}{:>9.0}{ratio:>9.2}{ms:>13}   {}{below}",
            row.label,
            row.rps,
            rounds.join(" ")
        );
    }
    println!(
        "(ratio = mode / anonymous, target >= {TARGET_RATIO:.2}; median = one sequential GET \
         of each of the {} manifests)",
        crate::LATENCY_REQUESTS
    );
}
