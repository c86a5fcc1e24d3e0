//! Reading the audit trail (every change to accounts, deletes, sign-ins, failed logins).

use super::{Auth, AuthError};
use crate::db::audit::{self, Entry, Filter};

impl Auth {
    /// One page of the audit trail narrowed by `filter`, newest first, with how many entries
    /// pass in all.
    pub async fn audit_page(
        &self,
        filter: Filter,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<Entry>), AuthError> {
        Ok(self
            .db
            .read(move |c| audit::page(c, &filter, offset, limit))
            .await?)
    }
}
