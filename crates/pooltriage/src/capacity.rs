//! The deployment rule as a static check: the database owner's replicas × pool size must fit in
//! PostgreSQL's `max_connections`.
//!
//! Rules: for every production Deployment/StatefulSet attributed to an owner (see
//! [`crate::workloads`]) the replica count is the `maxReplicas` of a HorizontalPodAutoscaler
//! targeting it, else its `spec.replicas`, else Kubernetes' default of 1. Its pool size is the
//! largest size-capping pool value (`maxOpenConns`, `DB_MAX_CONNECTIONS`, `poolSize`, ...; see
//! [`crate::deploy::is_max_pool_key`]) found in deploy YAML in its own document or in a
//! ConfigMap/Secret it reads (`envFrom`, `valueFrom`, volumes). Values may be literal or Helm
//! `{{ .Values.x }}` references resolved from the chart's `values.yaml`; a template document
//! wrapped in `{{- if .Values.x }}` whose `x` is unset or false there is not rendered and is
//! ignored (the usual HPA behind `autoscaling.enabled: false`). The limit is the
//! production PostgreSQL `max_connections` nearest to the workload's manifest (longest common
//! directory; the smallest on a tie) minus `superuser_reserved_connections` declared in the same
//! file (default 3). When replicas × pool size exceeds the limit the check reports a
//! `pool-exceeds-max-connections` violation at the pool value, with the replica count and the
//! PostgreSQL setting as related locations. Nothing is reported when any of the three numbers is
//! missing or cannot be resolved.

use std::collections::HashMap;

use serde_norway::Value;

use crate::category::Category;
use crate::config::{AllowEntry, PathPattern};
use crate::deploy::is_max_pool_key;
use crate::finding::Finding;
use crate::k8s::{is_truthy, resolve_number, values_at, K8sObject, PgSetting};
use crate::policy::allowed;
use crate::scan::ScannedFile;
use crate::services::Service;
use crate::violation::{Related, Violation, ViolationRule};
use crate::workloads::Attributor;

/// PostgreSQL's default `superuser_reserved_connections`.
pub const DEFAULT_RESERVED: u64 = 3;

struct Limit<'a> {
    file: &'a ScannedFile,
    max: &'a PgSetting,
    reserved: Option<&'a PgSetting>,
}

impl Limit<'_> {
    fn reserved(&self) -> u64 {
        self.reserved.map_or(DEFAULT_RESERVED, |r| r.value)
    }

    fn usable(&self) -> u64 {
        self.max.value.saturating_sub(self.reserved())
    }
}

/// Runs the check; see the module documentation.
pub fn check(
    files: &[ScannedFile],
    services: &[Service],
    owners: &[String],
    allowlist: &[(AllowEntry, PathPattern)],
    used_entries: &mut [bool],
) -> Vec<Violation> {
    let prod = |f: &&ScannedFile| f.category == Category::Production;
    let limits: Vec<Limit<'_>> = files
        .iter()
        .filter(prod)
        .flat_map(|f| {
            let reserved = f
                .pg_settings
                .iter()
                .find(|s| s.name == "superuser_reserved_connections");
            f.pg_settings
                .iter()
                .filter(|s| s.name == "max_connections")
                .map(move |max| Limit {
                    file: f,
                    max,
                    reserved,
                })
        })
        .collect();
    if limits.is_empty() {
        return Vec::new();
    }
    let by_path: Charts<'_> = files.iter().map(|f| (f.path.as_str(), f)).collect();
    let objects: Vec<(&ScannedFile, &K8sObject)> = files
        .iter()
        .filter(prod)
        .flat_map(|f| f.k8s.iter().map(move |o| (f, o)))
        .filter(|(f, o)| rendered(o, f, &by_path))
        .collect();
    let attributor = Attributor::new(services, owners);
    let mut out = Vec::new();
    for &(f, w) in &objects {
        if !matches!(
            w.kind.as_str(),
            "Deployment" | "StatefulSet" | "DeploymentConfig"
        ) || w.db_server
        {
            continue;
        }
        let Some(attr) = attributor.attribute(w, f).filter(|a| a.owner) else {
            continue;
        };
        let Some((replicas, replicas_at)) = replicas(w, f, &objects, &by_path) else {
            continue;
        };
        let Some((pool, pool_finding)) = pool_size(w, f, &objects, &by_path) else {
            continue;
        };
        let Some(limit) = limits.iter().max_by_key(|l| {
            (
                common_dir_len(&l.file.path, &f.path),
                std::cmp::Reverse(l.usable()),
            )
        }) else {
            continue;
        };
        let total = replicas.saturating_mul(pool);
        let usable = limit.usable();
        if total <= usable {
            continue;
        }
        let reserved = limit.reserved();
        let setting = pool_finding.setting.as_deref().unwrap_or("pool size");
        let message = format!(
            "{}: {} ({}) × {setting} {pool} ({}) = {total} connections, more than PostgreSQL's max_connections {} − {reserved} reserved = {usable} ({}:{})",
            attr.service,
            replicas_at.what,
            replicas_at.location(),
            pool_finding.location(),
            limit.max.value,
            limit.file.path,
            limit.max.line
        );
        let mut related = vec![
            replicas_at,
            Related {
                file: limit.file.path.clone(),
                line: limit.max.line,
                what: format!("max_connections {}", limit.max.value),
                snippet: format!("max_connections = {}", limit.max.value),
            },
        ];
        if let Some(r) = limit.reserved {
            related.push(Related {
                file: limit.file.path.clone(),
                line: r.line,
                what: format!("superuser_reserved_connections {}", r.value),
                snippet: format!("superuser_reserved_connections = {}", r.value),
            });
        }
        let rule = ViolationRule::PoolExceedsMaxConnections;
        let allowed_reason = allowed(
            allowlist,
            used_entries,
            rule,
            &pool_finding.file,
            pool_finding.line,
        );
        out.push(Violation {
            rule,
            services: vec![attr.service],
            finding: pool_finding.clone(),
            message,
            allowed_reason,
            related,
        });
    }
    out
}

type Charts<'a> = HashMap<&'a str, &'a ScannedFile>;

/// The parsed `values.yaml` of the Helm chart a template belongs to: the one next to the
/// template's `templates/` directory.
fn chart_values<'a>(charts: &Charts<'a>, f: &ScannedFile) -> Option<&'a Value> {
    let chart = if f.path.starts_with("templates/") {
        ""
    } else {
        &f.path[..f.path.find("/templates/")? + 1]
    };
    ["values.yaml", "values.yml"]
        .iter()
        .find_map(|n| charts.get(format!("{chart}{n}").as_str()))
        .and_then(|v| v.helm_values.as_ref())
}

/// False for a template document wrapped in `{{- if .Values.x }}` whose chart values leave `x`
/// unset or false (the `helm create` HPA behind `autoscaling.enabled: false`): Helm does not
/// render it. Without chart values the object is assumed rendered.
fn rendered(o: &K8sObject, f: &ScannedFile, charts: &Charts<'_>) -> bool {
    match (&o.condition, chart_values(charts, f)) {
        (Some(path), Some(values)) => is_truthy(values_at(values, path)),
        _ => true,
    }
}

/// The replica count of `w`: an HPA's `maxReplicas`, `spec.replicas`, or 1.
fn replicas(
    w: &K8sObject,
    f: &ScannedFile,
    objects: &[(&ScannedFile, &K8sObject)],
    charts: &Charts<'_>,
) -> Option<(u64, Related)> {
    let values_of = |x: &ScannedFile| chart_values(charts, x);
    let hpa = w.name.as_ref().and_then(|name| {
        objects
            .iter()
            .filter(|(_, o)| {
                o.kind == "HorizontalPodAutoscaler" && o.scale_target.as_ref() == Some(name)
            })
            .max_by_key(|(hf, _)| common_dir_len(&hf.path, &f.path))
    });
    if let Some((hf, h)) = hpa {
        if let Some(m) = &h.max_replicas {
            let n = resolve_number(&m.raw, values_of(hf))?;
            return Some((
                n,
                Related {
                    file: hf.path.clone(),
                    line: m.line,
                    what: format!("HPA maxReplicas {n}"),
                    snippet: format!("maxReplicas: {}", m.raw),
                },
            ));
        }
    }
    match &w.replicas {
        Some(r) => {
            let n = resolve_number(&r.raw, values_of(f))?;
            Some((
                n,
                Related {
                    file: f.path.clone(),
                    line: r.line,
                    what: format!("replicas {n}"),
                    snippet: format!("replicas: {}", r.raw),
                },
            ))
        }
        None => Some((
            1,
            Related {
                file: f.path.clone(),
                line: w.kind_line,
                what: "replicas not set (Kubernetes default 1)".to_string(),
                snippet: format!("kind: {}", w.kind),
            },
        )),
    }
}

/// The largest size-capping pool value of `w`, in its own document or in a ConfigMap/Secret it
/// reads.
fn pool_size<'a>(
    w: &K8sObject,
    f: &'a ScannedFile,
    objects: &[(&'a ScannedFile, &'a K8sObject)],
    charts: &Charts<'_>,
) -> Option<(u64, &'a Finding)> {
    let values_of = |x: &ScannedFile| chart_values(charts, x);
    let in_doc = |file: &'a ScannedFile, obj: &K8sObject| -> Option<(u64, &'a Finding)> {
        file.findings
            .iter()
            .filter(|x| {
                x.detector == "yaml/pool-value"
                    && x.category == Category::Production
                    && obj.contains_line(x.line)
                    && x.setting.as_deref().is_some_and(is_max_pool_key)
            })
            .filter_map(|x| {
                let n = resolve_number(x.value.as_deref()?, values_of(file))?;
                Some((n, x))
            })
            .max_by_key(|(n, _)| *n)
    };
    if let Some(hit) = in_doc(f, w) {
        return Some(hit);
    }
    w.refs
        .iter()
        .filter_map(|name| {
            objects
                .iter()
                .filter(|(_, o)| {
                    matches!(o.kind.as_str(), "ConfigMap" | "Secret")
                        && o.name.as_deref() == Some(name.as_str())
                })
                .max_by_key(|(of, _)| common_dir_len(&of.path, &f.path))
                .and_then(|(of, o)| in_doc(of, o))
        })
        .max_by_key(|(n, _)| *n)
}

/// Number of leading directory components two paths share.
fn common_dir_len(a: &str, b: &str) -> usize {
    let da: Vec<&str> = a.split('/').collect();
    let db: Vec<&str> = b.split('/').collect();
    da[..da.len() - 1]
        .iter()
        .zip(&db[..db.len() - 1])
        .take_while(|(x, y)| x == y)
        .count()
}
