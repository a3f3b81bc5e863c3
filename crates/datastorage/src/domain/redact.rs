//! PII redaction of exports (`redact_pii=true`), upstream's rules: `event_data.user_email`,
//! `event_data.source_ip` and `event_data.phone_number` are masked, and so is the exporting
//! principal when it is an e-mail address. Applied before signing, so what is shipped is what is
//! signed; the redacted events no longer match their chain hashes, which the export says
//! (`redacted: true`) and a verifier counts as unverifiable, not edited.

use datastorage_api::JsonObject;
use serde_json::Value;

/// Masks an e-mail address: `user@domain.com` → `u***@d***.com`.
pub fn email(s: &str) -> String {
    let Some((user, domain)) = s.split_once('@') else {
        return mask_all(s);
    };
    let (host, tld) = domain.rsplit_once('.').unwrap_or((domain, ""));
    let first = |t: &str| t.chars().next().map(String::from).unwrap_or_default();
    let tld = if tld.is_empty() {
        String::new()
    } else {
        format!(".{tld}")
    };
    format!("{}***@{}***{tld}", first(user), first(host))
}

/// Masks an IP address, keeping its first part: `192.168.1.1` → `192.***.*.***`.
pub fn ip(s: &str) -> String {
    if let Some((first, _)) = s.split_once('.') {
        format!("{first}.***.*.***")
    } else if let Some((first, _)) = s.split_once(':') {
        format!("{first}:****")
    } else {
        mask_all(s)
    }
}

/// Masks a phone number, keeping its country part: `+1-555-1234` → `+1-***-****`.
pub fn phone(s: &str) -> String {
    let mut parts = s.split('-');
    let head = parts.next().unwrap_or_default();
    let rest: Vec<String> = parts.map(|p| "*".repeat(p.chars().count())).collect();
    if rest.is_empty() {
        mask_all(s)
    } else {
        format!("{head}-{}", rest.join("-"))
    }
}

fn mask_all(s: &str) -> String {
    "*".repeat(s.chars().count().clamp(3, 8))
}

/// Applies the rules to one event's `event_data`; true when something changed.
pub fn event_data(data: &mut JsonObject) -> bool {
    let mut changed = false;
    for (field, mask) in [
        ("user_email", email as fn(&str) -> String),
        ("source_ip", ip),
        ("phone_number", phone),
    ] {
        if let Some(Value::String(s)) = data.get_mut(field) {
            *s = mask(s);
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_examples_are_masked_as_documented() {
        assert_eq!(email("user@domain.com"), "u***@d***.com");
        assert_eq!(ip("192.168.1.1"), "192.***.*.***");
        assert_eq!(phone("+1-555-1234"), "+1-***-****");
        let mut data: JsonObject = serde_json::from_str(
            r#"{"user_email":"a@b.io","source_ip":"10.0.0.1","phone_number":"+44-20-7946","other":"kept"}"#,
        )
        .unwrap();
        assert!(event_data(&mut data));
        assert_eq!(data["user_email"], "a***@b***.io");
        assert_eq!(data["source_ip"], "10.***.*.***");
        assert_eq!(data["phone_number"], "+44-**-****");
        assert_eq!(data["other"], "kept");
    }
}
