//! [`Scope`]: what a principal may do, and [`Scopes`], a set of them.

use std::fmt;

/// One permission. Every route needs exactly one (see `routes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Write events (single and batch).
    Write,
    /// Query events and read one.
    Read,
    /// Verify a chain.
    Verify,
    /// Export events (signed bundles).
    Export,
    /// Place and lift legal holds.
    Hold,
    /// Everything, including what no other scope grants.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 6] = [
        Scope::Write,
        Scope::Read,
        Scope::Verify,
        Scope::Export,
        Scope::Hold,
        Scope::Admin,
    ];

    /// The name tokens, certificates and the docs use: `audit:write`, …, `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Write => "audit:write",
            Scope::Read => "audit:read",
            Scope::Verify => "audit:verify",
            Scope::Export => "audit:export",
            Scope::Hold => "audit:hold",
            Scope::Admin => "admin",
        }
    }

    /// The RBAC verb a SubjectAccessReview asks for on the virtual resource.
    pub fn verb(self) -> &'static str {
        match self {
            Scope::Write => "create",
            Scope::Read => "get",
            Scope::Verify => "verify",
            Scope::Export => "export",
            Scope::Hold => "hold",
            Scope::Admin => "admin",
        }
    }

    /// Parses a scope name.
    pub fn parse(name: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| {
                format!(
                    "unknown scope {name:?}: use {}",
                    Scope::ALL.map(Scope::as_str).join(", ")
                )
            })
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes. `admin` grants every scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope (`admin`).
    pub const ALL: Scopes = Scopes(0b11_1111);

    /// Parses scope names, naming the first unknown one.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Scopes, String> {
        names.iter().try_fold(Scopes::default(), |set, n| {
            Ok(set.with(Scope::parse(n.as_ref())?))
        })
    }

    /// This set and `scope`.
    pub fn with(self, scope: Scope) -> Scopes {
        Scopes(self.0 | scope.bit())
    }

    /// Whether the set grants `scope`.
    pub fn allows(self, scope: Scope) -> bool {
        self.0 & (scope.bit() | Scope::Admin.bit()) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names in the set.
    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.0 & s.bit() != 0)
            .map(Scope::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_grants_every_scope_and_others_only_themselves() {
        let admin = Scopes::parse(&["admin"]).unwrap();
        assert!(Scope::ALL.iter().all(|s| admin.allows(*s)));
        let writer = Scopes::parse(&["audit:write"]).unwrap();
        assert!(writer.allows(Scope::Write));
        assert!(!writer.allows(Scope::Read) && !writer.allows(Scope::Admin));
        assert_eq!(
            Scopes::parse(&["audit:write", "audit:read"])
                .unwrap()
                .names(),
            ["audit:write", "audit:read"]
        );
    }

    #[test]
    fn an_unknown_scope_is_named() {
        let e = Scopes::parse(&["audit:write", "audit:delete"]).unwrap_err();
        assert!(
            e.contains("\"audit:delete\"") && e.contains("audit:hold"),
            "{e}"
        );
    }
}
