//! Attributing Kubernetes objects (workloads, Jobs, ConfigMaps) to services.
//!
//! Rules: a manifest rarely sits inside the directory of the code it deploys, so an object is
//! attributed by name, not by path. Its identities (the `app.kubernetes.io/name`, `app` and
//! `k8s-app` labels, `metadata.name`, container names, image names) are compared with the owner
//! names first and then with the detected services, ignoring case, separators, kind words and a
//! plural `s` (`data-storage-service` is `datastorage`, `webhook-service` is `webhooks`; see
//! [`crate::names::identity_key`]). When no identity matches, the manifest's directory and file
//! name are tried the same way, then a service whose files contain the manifest, then the one
//! service covering the whole repository. Anything else is not attributed: a long-running
//! workload is then its own (non-owner) service, named after its first identity, and a Job is
//! reported as unattributed.

use crate::finding::Finding;
use crate::k8s::K8sObject;
use crate::names::{identity_key, normalize_name};
use crate::scan::ScannedFile;
use crate::services::Service;

/// Who an object belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    /// The service (an owner's configured name, or a detected service's name).
    pub service: String,
    /// True when the service is a database owner.
    pub owner: bool,
}

/// Attributes objects to owners and services.
pub struct Attributor<'a> {
    owners: &'a [String],
    services: &'a [Service],
}

fn same(a: &str, b: &str) -> bool {
    if normalize_name(a) == normalize_name(b) {
        return true;
    }
    let (ka, kb) = (identity_key(a), identity_key(b));
    !ka.is_empty() && ka == kb
}

impl<'a> Attributor<'a> {
    /// An attributor for these services and owners.
    pub fn new(services: &'a [Service], owners: &'a [String]) -> Attributor<'a> {
        Attributor { owners, services }
    }

    fn is_owner(&self, name: &str) -> bool {
        self.owners
            .iter()
            .any(|o| normalize_name(o) == normalize_name(name))
    }

    fn match_names<'n>(&self, names: impl Iterator<Item = &'n str> + Clone) -> Option<Attribution> {
        for n in names.clone() {
            if let Some(o) = self.owners.iter().find(|o| same(o, n)) {
                // Report under the detected service's spelling when there is one.
                let service = self
                    .services
                    .iter()
                    .find(|s| normalize_name(&s.name) == normalize_name(o))
                    .map_or_else(|| o.clone(), |s| s.name.clone());
                return Some(Attribution {
                    service,
                    owner: true,
                });
            }
        }
        for n in names {
            if let Some(s) = self.services.iter().find(|s| same(&s.name, n)) {
                return Some(Attribution {
                    service: s.name.clone(),
                    owner: self.is_owner(&s.name),
                });
            }
        }
        None
    }

    /// The service `obj` (declared in `file`) belongs to, if any can be told.
    pub fn attribute(&self, obj: &K8sObject, file: &ScannedFile) -> Option<Attribution> {
        if let Some(a) = self.match_names(obj.identities.iter().map(String::as_str)) {
            return Some(a);
        }
        let dir_name = file.dir().rsplit('/').next().unwrap_or("");
        let stem = file.name().split('.').next().unwrap_or("");
        if let Some(a) = self.match_names([dir_name, stem].into_iter().filter(|n| !n.is_empty())) {
            return Some(a);
        }
        let containing: Vec<&Service> = self.services.iter().filter(|s| s.contains(file)).collect();
        let pick = if containing.len() == 1 {
            Some(containing[0])
        } else {
            containing
                .iter()
                .copied()
                .find(|s| s.roots.iter().any(String::is_empty))
        };
        pick.map(|s| Attribution {
            service: s.name.clone(),
            owner: self.is_owner(&s.name),
        })
    }
}

/// Sets [`Finding::service`] on every workload finding (database credentials in a manifest):
/// the attributed service, or for an unattributed long-running workload its own name.
pub fn attribute_findings(files: &mut [ScannedFile], services: &[Service], owners: &[String]) {
    let attributor = Attributor::new(services, owners);
    for file in files.iter_mut() {
        let services: Vec<Option<String>> = file
            .findings
            .iter()
            .map(|f| {
                f.workload
                    .as_ref()
                    .and_then(|_| service_of(&attributor, file, f))
            })
            .collect();
        for (f, service) in file.findings.iter_mut().zip(services) {
            if f.workload.is_some() {
                f.service = service;
            }
        }
    }
}

fn service_of(attributor: &Attributor<'_>, file: &ScannedFile, f: &Finding) -> Option<String> {
    let obj = file.k8s.iter().find(|o| o.contains_line(f.line))?;
    match attributor.attribute(obj, file) {
        Some(a) => Some(a.service),
        None if obj.is_long_running() => obj.identities.first().cloned().or(obj.name.clone()),
        None => None,
    }
}
