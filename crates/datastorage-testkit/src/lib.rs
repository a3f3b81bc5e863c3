//! The test kit of the DataStorage workspace (not published): real PostgreSQL and real SQLite,
//! never a mock.
//!
//! - [`pg`]: fresh databases on the test server ([`PgDb`]) and private throwaway clusters with
//!   special settings ([`TempCluster`]).
//! - [`app`]: [`TestApp`], a server in process (`Router::oneshot`, no listener) or on loopback
//!   ports, with typed calls for every route.
//! - [`events`]: event builders.
//! - [`pgbouncer`]: a real PgBouncer in transaction mode in front of a test database.
//! - [`process`]: the real `datastorage` binary as a child process that is always stopped.
//! - [`tls`]: a throwaway certificate authority for TLS tests.
//! - [`kube`]: a stand-in Kubernetes API server (TokenReview, SubjectAccessReview) for
//!   `auth.mode: kubernetes` tests.
//!
//! PostgreSQL comes from `DATASTORAGE_TEST_PG_URL` (an admin URL; `scripts/test` starts a
//! throwaway cluster and sets it), else `postgres://postgres@127.0.0.1:5432/postgres`.

pub mod app;
pub mod events;
pub mod kube;
pub mod pg;
pub mod pgbouncer;
pub mod process;
pub mod tls;

pub use app::{metric_value, Backend, TestApp, TestResponse};
pub use events::{event, request};
pub use pg::{free_port, pg_admin_url, pg_bin, PgDb, TempCluster};
pub use pgbouncer::{BouncerSettings, PgBouncer};

/// Instantiates each test body (an `async fn(Backend)`) for PostgreSQL and SQLite, as
/// `postgres::name` and `sqlite::name`.
#[macro_export]
macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Backend::Postgres).await }) +
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Backend::Sqlite).await }) +
        }
    };
}

/// Instantiates each test body (an `async fn(Backend)`) as [`both!`] does, and once more through
/// PgBouncer in transaction mode, as `pgbouncer::name`.
#[macro_export]
macro_rules! every_backend {
    ($($name:ident),+ $(,)?) => {
        $crate::both!($($name),+);
        mod pgbouncer {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Backend::PgBouncer).await }) +
        }
    };
}
