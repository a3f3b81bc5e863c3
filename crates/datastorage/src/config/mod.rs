//! Settings: one typed tree, loaded from a YAML file, then overridden by environment variables.
//!
//! Rules:
//! - Every key has a documented default (a named constant where it is a number or duration), so
//!   an omitted key never turns into a zero (an upstream defect: an omitted `maxIdleConns` kept no
//!   idle connections at all).
//! - An unknown key is an error that names the key and its source, at start.
//! - Cross-field rules live in one place, [`Settings::validate`], and name the keys involved.
//! - Environment overrides: `DATASTORAGE_` + the key path with `__` between levels; within a
//!   level case and `_` are ignored, so `DATASTORAGE_DATABASE__MAX_OPEN_CONNS=10` sets
//!   `database.maxOpenConns`. An unknown variable with the prefix is an error too.
//! - The database password comes from `DATASTORAGE_DATABASE__PASSWORD`, from `secretsFile` +
//!   `passwordKey` (as upstream), or, discouraged, from `password` in the file. It is held in a
//!   [`Secret`], which never prints.
//! - Every key of upstream's config file loads: applied where this service has the feature
//!   (health port, role from the secrets file, the chain key of `audit`), else typed with
//!   upstream's key list and reported inactive by name (`redis`, `telemetry`, …).
//!
//! One file per section (`server`, `logging`, `database`, `hash_chain`), the tree and its
//! cross-section rules in `settings`, loading in `load`.

mod auth;
mod buffer;
mod checkpoints;
mod database;
mod explorer;
mod hash_chain;
mod load;
mod logging;
mod retention;
mod secret;
mod server;
mod settings;
mod signing;
mod upstream;
mod validation;
mod values;

pub use auth::*;
pub use buffer::*;
pub use checkpoints::*;
pub use database::*;
pub use explorer::*;
pub use hash_chain::HashChainSettings;
pub use load::{default_config_yaml, Loaded, ENV_CONFIG_FILE, ENV_PREFIX, ENV_SERVER_URL};
pub use logging::{LogFormat, LoggingSettings};
pub use retention::*;
pub use secret::Secret;
pub use server::*;
pub use settings::Settings;
pub use signing::SigningSettings;
pub use upstream::*;
pub use validation::{ValidationSettings, DEFAULT_MAX_FUTURE_SKEW};
pub use values::{format_duration, parse_duration};
