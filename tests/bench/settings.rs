//! The knobs read from the environment (documented in registry.rs): `BENCH_SIZE_MIB` and
//! `BENCH_ONLY`. peers.rs reads where the peers are.

use anyhow::{Context, Result, bail};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Only {
    All,
    Berth,
    Auth,
    Cache,
}

pub struct Settings {
    pub size_mib: u64,
    pub only: Only,
}

impl Settings {
    pub fn from_env() -> Result<Settings> {
        let size_mib = match std::env::var("BENCH_SIZE_MIB") {
            Ok(v) => v
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .with_context(|| format!("BENCH_SIZE_MIB={v:?} is not a positive number"))?,
            Err(_) => 1024,
        };
        let only = match std::env::var("BENCH_ONLY").as_deref() {
            Ok("berth") => Only::Berth,
            Ok("auth") => Only::Auth,
            Ok("cache") => Only::Cache,
            Ok(other) => {
                bail!("BENCH_ONLY={other:?}: accepted values are \"berth\", \"auth\" and \"cache\"")
            }
            Err(_) => Only::All,
        };
        Ok(Settings { size_mib, only })
    }

    pub fn size_label(&self) -> String {
        if self.size_mib.is_multiple_of(1024) {
            format!("{} GiB", self.size_mib / 1024)
        } else {
            format!("{} MiB", self.size_mib)
        }
    }
}
