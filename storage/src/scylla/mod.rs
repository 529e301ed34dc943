//! The distributed store: [`Store`](crate::Store) on ScyllaDB (any CQL v4 server), for the
//! distributed deployment, where every process shares one store.
//!
//! - **Schema** (`storage/cql/*.cql`) is applied by [`migrate`] (`herald migrate`): versioned,
//!   idempotent, recorded in `schema_migrations`. [`ScyllaStore::connect`] prepares every
//!   statement up front and refuses a keyspace whose schema is older than this Herald's.
//! - **Prepared statements only** on the data path; each carries the configured consistency
//!   (default `LOCAL_QUORUM`) and lightweight transactions `LOCAL_SERIAL`.
//! - **Atomicity** is what CQL gives and the traits promise, no more: one partition per
//!   unlogged batch; lightweight transactions (`IF`) only on the control path (campaign
//!   compare-and-set, global sender ownership).
//! - **Writes are bounded**: `apply` writes its partitions with at most `max_concurrent_writes`
//!   in flight. **Reads page** (`execute_iter`) where a result can be large.
//! - Values are Herald's codec in `body` blobs; keys are columns (the layout is in the schema
//!   file's comments).
//!
//! It is not: shared state (claims, leases, tokens are Redis's, `crate::redis`), or a cache.

mod audiences;
mod catalog;
mod held;
mod log;
mod statements;

use crate::{Error, Result};
use futures::TryStreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;
use statements::Statements;
use std::time::Duration;

/// Where the store is and how it writes.
#[derive(Debug, Clone)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    pub keyspace: String,
    /// The keyspace's replication, as CQL (used by [`migrate`] when it creates the keyspace).
    pub replication: String,
    pub consistency: Consistency,
    /// How long message-log rows and provider-id index entries live.
    pub retention: Duration,
    /// Partition writes `apply` keeps in flight at most.
    pub max_concurrent_writes: usize,
    /// Rows per page of a paged read.
    pub page_size: i32,
    pub connect_timeout: Duration,
    /// Wait after each schema change until every node agrees on the schema (keep on for any
    /// real cluster; off only for test servers that cannot answer the agreement queries).
    pub schema_agreement: bool,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        Self {
            nodes: vec!["127.0.0.1:9042".into()],
            keyspace: "herald".into(),
            replication: "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}".into(),
            consistency: Consistency::LocalQuorum,
            retention: Duration::from_secs(30 * 24 * 3600),
            max_concurrent_writes: 64,
            page_size: 1000,
            connect_timeout: Duration::from_secs(10),
            schema_agreement: true,
        }
    }
}

/// The schema versions, in order: (version, name, CQL).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("../../cql/001_initial.cql")),
    (2, "log_campaigns", include_str!("../../cql/002_log_campaigns.cql")),
    (3, "timeline", include_str!("../../cql/003_timeline.cql")),
    (4, "log_journal", include_str!("../../cql/004_log_journal.cql")),
];

pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable { backend: "scylla", message: format!("{what}: {e}") }
}

async fn session(config: &ScyllaConfig) -> Result<Session> {
    SessionBuilder::new()
        .known_nodes(&config.nodes)
        .connection_timeout(config.connect_timeout)
        .auto_await_schema_agreement(config.schema_agreement)
        .build()
        .await
        .map_err(|e| unavailable(&format!("connecting to {:?}", config.nodes), e))
}

/// The statements of a schema file, one per `;`, comments dropped.
fn statements_of(cql: &str) -> Vec<String> {
    let text: String = cql.lines().filter(|l| !l.trim_start().starts_with("--")).map(|l| format!("{l}\n")).collect();
    text.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Creates the keyspace if missing and applies every schema version not yet recorded; safe to
/// run again and from several processes (every statement is idempotent). Returns the versions
/// it applied.
pub async fn migrate(config: &ScyllaConfig) -> Result<Vec<i32>> {
    check_name(&config.keyspace)?;
    let session = session(config).await?;
    let ks = &config.keyspace;
    let ddl = |cql: String| {
        let session = &session;
        async move { session.query_unpaged(cql.clone(), ()).await.map_err(|e| unavailable(&cql, e)).map(|_| ()) }
    };
    ddl(format!("CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {}", config.replication)).await?;
    session.use_keyspace(ks, false).await.map_err(|e| unavailable("use keyspace", e))?;
    ddl("CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text, applied_ms bigint)".into())
        .await?;
    let applied = applied_versions(&session).await?;
    let mut done = Vec::new();
    for (version, name, cql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        for statement in statements_of(cql) {
            ddl(statement).await?;
        }
        session
            .query_unpaged(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?, ?, ?)",
                (*version, *name, schemas::now_ms() as i64),
            )
            .await
            .map_err(|e| unavailable("recording a migration", e))?;
        done.push(*version);
    }
    Ok(done)
}

async fn applied_versions(session: &Session) -> Result<Vec<i32>> {
    let result = session
        .query_unpaged("SELECT version FROM schema_migrations", ())
        .await
        .map_err(|e| unavailable("reading schema_migrations", e))?;
    let rows = result.into_rows_result().map_err(|e| unavailable("reading schema_migrations", e))?;
    let versions = rows.rows::<(i32,)>().map_err(|e| unavailable("reading schema_migrations", e))?;
    versions.map(|r| r.map(|(v,)| v).map_err(|e| unavailable("reading schema_migrations", e))).collect()
}

fn check_name(keyspace: &str) -> Result<()> {
    let ok = !keyspace.is_empty()
        && keyspace.len() <= 48
        && keyspace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && keyspace.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            code: "invalid_keyspace",
            message: format!("keyspace name {keyspace:?} is not a CQL name"),
        })
    }
}

/// Herald's store on ScyllaDB (see the module docs).
pub struct ScyllaStore {
    session: Session,
    st: Statements,
    config: ScyllaConfig,
    /// Serializes this process's writes to one held lane (striped by lane): a lane's hold and
    /// release may run concurrently in the runner, and its summary is read-modify-write.
    held_locks: Vec<tokio::sync::Mutex<()>>,
}

impl ScyllaStore {
    /// Connects to a migrated keyspace and prepares every statement.
    pub async fn connect(config: ScyllaConfig) -> Result<Self> {
        check_name(&config.keyspace)?;
        let session = session(&config).await?;
        session
            .use_keyspace(&config.keyspace, false)
            .await
            .map_err(|e| unavailable(&format!("keyspace {} (run `herald migrate`)", config.keyspace), e))?;
        let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        let applied = applied_versions(&session).await.map_err(|e| Error::Invalid {
            code: "schema_outdated",
            message: format!("keyspace {} has no Herald schema ({e}): run `herald migrate`", config.keyspace),
        })?;
        if !applied.contains(&latest) {
            return Err(Error::Invalid {
                code: "schema_outdated",
                message: format!("keyspace {} lacks schema version {latest}: run `herald migrate`", config.keyspace),
            });
        }
        let st = Statements::prepare(&session, config.consistency).await?;
        let held_locks = (0..64).map(|_| tokio::sync::Mutex::new(())).collect();
        Ok(Self { session, st, config, held_locks })
    }

    /// Whether the cluster answers (for readiness).
    pub async fn ping(&self) -> Result<()> {
        self.rows::<(i32,)>(&self.st.ping, ()).await.map(|_| ())
    }

    fn ttl(&self) -> i32 {
        i32::try_from(self.config.retention.as_secs()).unwrap_or(i32::MAX).max(1)
    }

    async fn exec(&self, st: &PreparedStatement, values: impl SerializeRow) -> Result<()> {
        self.session.execute_unpaged(st, values).await.map_err(|e| unavailable("write", e))?;
        Ok(())
    }

    /// Every row of a (small) result.
    async fn rows<R>(&self, st: &PreparedStatement, values: impl SerializeRow) -> Result<Vec<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let result = self.session.execute_unpaged(st, values).await.map_err(|e| unavailable("read", e))?;
        let rows = result.into_rows_result().map_err(|e| unavailable("read", e))?;
        let typed = rows.rows::<R>().map_err(|e| unavailable("read", e))?;
        typed.map(|r| r.map_err(|e| unavailable("read", e))).collect()
    }

    /// Every row of a result of any size, page by page.
    async fn paged<R>(&self, st: &PreparedStatement, values: impl SerializeRow) -> Result<Vec<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm> + 'static,
    {
        let mut st = st.clone();
        st.set_page_size(self.config.page_size);
        let pager = self.session.execute_iter(st, values).await.map_err(|e| unavailable("read", e))?;
        let stream = pager.rows_stream::<R>().map_err(|e| unavailable("read", e))?;
        stream.try_collect().await.map_err(|e| unavailable("read", e))
    }
}

/// Herald's codec, for `body` columns.
pub(crate) fn body<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(schemas::codec::encode(value)?)
}

pub(crate) fn from_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(schemas::codec::decode(bytes)?)
}

/// Ids are u64 in Herald and bigint (i64) in CQL: the same 64 bits.
pub(crate) fn big(id: u64) -> i64 {
    id as i64
}

#[cfg(test)]
mod tests;
