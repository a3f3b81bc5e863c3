//! Access control: authenticators, scopes, the route table and rate limits.
//!
//! Empty until access control is built: today every route is open, which `serve` documents.
