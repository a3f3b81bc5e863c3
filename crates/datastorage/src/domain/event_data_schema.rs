//! [`EventDataSchemas`]: the payload schemas `event_data` must match (`validation.eventDataSchema`).
//!
//! The file is read, translated and every schema compiled once, at start; a file that cannot be
//! read, parsed or compiled stops the start with an error naming the key, the file and what is
//! wrong. Requests only run compiled validators, and only when the key is set. References are
//! resolved inside the file alone: nothing is fetched and no other file is read.
//!
//! Three shapes of file, YAML or JSON:
//!
//! - **An OpenAPI 3.0 or 3.1 document** (it has a top-level `openapi`), such as upstream's own
//!   `api/openapi/data-storage-v1.yaml`. The payload schema is
//!   `components.schemas.AuditEventRequest.properties.event_data`, `$ref`s followed. When it has
//!   a `discriminator`, the schema is chosen as upstream's server chooses it: by the value of the
//!   discriminator's `propertyName` *inside `event_data`* (upstream: `event_data.event_type`),
//!   looked up in its `mapping` (without a mapping, the value names the component schema, as
//!   OpenAPI says). An `event_data` without that property, or with a value the mapping does not
//!   list, is refused, as upstream refuses it; the event's own `event_type` is not compared with
//!   it (upstream does not either). Without a discriminator, `event_data` must match the schema
//!   as a whole. Every `#/components/schemas/…` reference is rewritten to `#/$defs/…` so that a
//!   JSON Schema (2020-12) validator resolves it; other references are refused. OpenAPI 3.0
//!   schemas are translated: `nullable: true` adds `null` to `type` (and to `enum`), boolean
//!   `exclusiveMinimum`/`exclusiveMaximum` become numeric, siblings of a `$ref` are dropped (3.0
//!   ignores them). In both versions `format: int32`/`int64` bound an integer to its range.
//!   Nested discriminators are not consulted: a nested `oneOf` is checked as JSON Schema checks it.
//! - **A mapping by event type**: an object whose only keys are `eventTypes` (event type →
//!   JSON Schema), optionally `$defs` (schemas shared by them, referenced as `#/$defs/NAME`) and
//!   `$schema` (the dialect; default 2020-12). The schema is chosen by the event's own
//!   `event_type`; an event type the mapping does not list is accepted unchecked.
//! - **A single JSON Schema** (any other object, or a boolean): every `event_data` must match it.
//!   Its `$schema` is honoured (default 2020-12).
//!
//! `format` is checked (`date-time`, `uuid`, `email`, …; formats the validator does not know,
//! such as OpenAPI's `double`, are ignored). A mismatch becomes field errors named by the path
//! inside the event (`event_data.signal_name`, `event_data.items[2].id`), at most
//! [`MAX_ERRORS_PER_EVENT`] of them, with short messages that never repeat the sent value.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use datastorage_api::validate::FieldErrors;
use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use jsonschema::{Draft, ValidationError, Validator};
use serde_json::{json, Map, Value};

/// The config key, named in every load error.
const KEY: &str = "validation.eventDataSchema";
/// The dialect OpenAPI schemas are translated to, and the default of the other shapes.
const DIALECT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";
/// Where OpenAPI component schemas are referenced from.
const COMPONENTS: &str = "#/components/schemas/";
/// Where the translated component schemas live in each compiled document.
const DEFS: &str = "#/$defs/";
/// Most field errors reported for one event: enough to fix a payload, bounded in cost and size.
pub const MAX_ERRORS_PER_EVENT: usize = 10;
/// Longest piece of a name or value quoted in a message, in characters.
const MAX_QUOTED: usize = 64;
/// Longest `$ref` chain followed to find the payload schema.
const MAX_REF_HOPS: usize = 32;

/// The compiled payload schemas of `validation.eventDataSchema`.
pub struct EventDataSchemas {
    select: Select,
}

/// How an event's payload schema is chosen.
enum Select {
    /// One schema for every `event_data`.
    All(Arc<Payload>),
    /// By the value of `property` inside `event_data` (an OpenAPI discriminator); a missing or
    /// unlisted value is refused.
    Discriminator {
        property: String,
        by_value: HashMap<String, Arc<Payload>>,
    },
    /// By the event's `event_type`; an unlisted type is accepted.
    EventType(HashMap<String, Arc<Payload>>),
}

/// One compiled schema and the name it has in the file.
struct Payload {
    name: String,
    validator: Validator,
}

impl fmt::Debug for EventDataSchemas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (how, count) = match &self.select {
            Select::All(p) => (format!("one schema ({})", p.name), 1),
            Select::Discriminator { property, by_value } => {
                (format!("by event_data.{property}"), by_value.len())
            }
            Select::EventType(by_type) => ("by event_type".to_owned(), by_type.len()),
        };
        f.debug_struct("EventDataSchemas")
            .field("select", &how)
            .field("values", &count)
            .finish()
    }
}

impl EventDataSchemas {
    /// Reads and compiles `path`. Errors name `validation.eventDataSchema`, the file and what is
    /// wrong with it.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{KEY}: cannot read {}", path.display()))?;
        let doc = parse(&text)
            .map_err(|e| anyhow!("{KEY}: {} is neither JSON nor YAML: {e}", path.display()))?;
        Self::from_document(&doc).map_err(|e| anyhow!("{KEY}: {}: {e:#}", path.display()))
    }

    /// Compiles an already parsed file (any of the three shapes).
    pub fn from_document(doc: &Value) -> anyhow::Result<Self> {
        let select = match doc {
            Value::Object(obj) if obj.contains_key("openapi") => openapi(obj)?,
            Value::Object(obj) if obj.contains_key("eventTypes") => by_event_type(obj)?,
            Value::Object(_) | Value::Bool(_) => Select::All(Arc::new(Payload {
                name: "the schema".to_owned(),
                validator: compile(doc, None).context("the schema does not compile")?,
            })),
            _ => bail!("must be an OpenAPI document, a mapping under eventTypes, or a JSON Schema (an object)"),
        };
        Ok(Self { select })
    }

    /// Records every way `event_data` (of an event of `event_type`) breaks its schema, named
    /// `event_data.…`.
    pub fn check(&self, event_type: &str, event_data: &Value, errors: &mut FieldErrors) {
        let payload = match &self.select {
            Select::All(payload) => payload,
            Select::EventType(by_type) => match by_type.get(event_type) {
                Some(payload) => payload,
                None => return,
            },
            Select::Discriminator { property, by_value } => {
                let field = format!("event_data.{property}");
                match event_data.get(property) {
                    None | Some(Value::Null) => {
                        errors.add(
                            &field,
                            format!("{field} is required: it names the payload schema ({KEY})"),
                        );
                        return;
                    }
                    Some(Value::String(value)) => match by_value.get(value) {
                        Some(payload) => payload,
                        None => {
                            errors.add(
                                &field,
                                format!(
                                    "{field} {} names no payload schema of {KEY} ({} are known)",
                                    quote(value),
                                    by_value.len()
                                ),
                            );
                            return;
                        }
                    },
                    Some(other) => {
                        errors.add(
                            &field,
                            format!("{field} must be a string (got {})", kind(other)),
                        );
                        return;
                    }
                }
            }
        };
        // The fast check first: only a payload that fails it pays for the error report.
        if payload.validator.is_valid(event_data) {
            return;
        }
        for error in payload
            .validator
            .iter_errors(event_data)
            .take(MAX_ERRORS_PER_EVENT)
        {
            describe(&error, errors);
        }
    }
}

/// JSON when it looks like JSON, else YAML (of which JSON is nearly a subset).
fn parse(text: &str) -> anyhow::Result<Value> {
    if text.trim_start().starts_with('{') {
        Ok(serde_json::from_str(text)?)
    } else {
        Ok(serde_norway::from_str(text)?)
    }
}

/// Compiles `schema`, with format checking and no fetching. `dialect`: the draft to compile with;
/// `None`: the one the schema's `$schema` names, 2020-12 when it names none.
fn compile(schema: &Value, dialect: Option<Draft>) -> anyhow::Result<Validator> {
    let mut options = jsonschema::options()
        .should_validate_formats(true)
        .offline();
    if let Some(draft) = dialect {
        options = options.with_draft(draft);
    }
    options
        .build(schema)
        .map_err(|e| anyhow!("{}", shorten(&e.to_string(), 300)))
}

// ---- OpenAPI ----

/// The payload schemas of an OpenAPI document.
fn openapi(doc: &Map<String, Value>) -> anyhow::Result<Select> {
    let version = doc
        .get("openapi")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("openapi must be a version string such as \"3.0.3\""))?;
    let v30 = if version.starts_with("3.0") {
        true
    } else if version.starts_with("3.1") {
        false
    } else {
        bail!("openapi {version:?}: only OpenAPI 3.0 and 3.1 documents are read");
    };
    let components = doc
        .get("components")
        .and_then(|c| c.get("schemas"))
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow!("has no components.schemas"))?;
    let event_data = components
        .get("AuditEventRequest")
        .and_then(|r| r.get("properties"))
        .and_then(|p| p.get("event_data"))
        .ok_or_else(|| {
            anyhow!("has no components.schemas.AuditEventRequest.properties.event_data, the payload schema")
        })?;
    let (event_data, event_data_at) = follow_refs(
        components,
        event_data,
        "components.schemas.AuditEventRequest.properties.event_data",
    )?;

    let mut defs = Defs {
        raw: components,
        v30,
        done: HashMap::new(),
    };
    let root = translate(event_data, v30, &event_data_at)?;

    let Some(discriminator) = event_data.get("discriminator") else {
        return Ok(Select::All(Arc::new(Payload {
            name: event_data_at.clone(),
            validator: build_with_defs(root, &mut defs).with_context(|| event_data_at.clone())?,
        })));
    };
    let at = format!("{event_data_at}.discriminator");
    let property = discriminator
        .get("propertyName")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{at}.propertyName must be a string"))?
        .to_owned();

    // value → component name, as the mapping says or, without one, by the names of the refs
    // of oneOf/anyOf.
    let mut targets: BTreeMap<String, String> = BTreeMap::new();
    match discriminator.get("mapping") {
        Some(Value::Object(mapping)) => {
            for (value, target) in mapping {
                let target = target
                    .as_str()
                    .ok_or_else(|| anyhow!("{at}.mapping.{value} must be a string"))?;
                let name = target.strip_prefix(COMPONENTS).unwrap_or(target);
                if !components.contains_key(name) {
                    bail!("{at}.mapping.{value}: no schema {target} in components.schemas");
                }
                targets.insert(value.clone(), name.to_owned());
            }
        }
        None => {
            for key in ["oneOf", "anyOf"] {
                for item in event_data
                    .get(key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(name) = item
                        .get("$ref")
                        .and_then(Value::as_str)
                        .and_then(|r| r.strip_prefix(COMPONENTS))
                    {
                        targets.insert(name.to_owned(), name.to_owned());
                    }
                }
            }
        }
        Some(_) => bail!("{at}.mapping must be an object"),
    }
    if targets.is_empty() {
        bail!("{at} maps no value to a schema");
    }

    // The event_data schema's own rules beside its oneOf/anyOf still apply to every payload.
    let mut outer = match root {
        Value::Object(obj) => obj,
        _ => Map::new(),
    };
    for key in ["oneOf", "anyOf", "discriminator"] {
        outer.remove(key);
    }
    let mut compiled: HashMap<String, Arc<Payload>> = HashMap::new();
    let mut by_value = HashMap::new();
    for (value, name) in targets {
        let payload = match compiled.get(&name) {
            Some(payload) => Arc::clone(payload),
            None => {
                let mut schema = outer.clone();
                schema.insert("$ref".into(), Value::String(format!("{DEFS}{name}")));
                let payload = Arc::new(Payload {
                    validator: build_with_defs(Value::Object(schema), &mut defs)
                        .with_context(|| format!("components.schemas.{name}"))?,
                    name: name.clone(),
                });
                compiled.insert(name, Arc::clone(&payload));
                payload
            }
        };
        by_value.insert(value, payload);
    }
    Ok(Select::Discriminator { property, by_value })
}

/// `schema`, or what its `$ref` chain ends at, and where that is.
fn follow_refs<'a>(
    components: &'a Map<String, Value>,
    mut schema: &'a Value,
    start: &str,
) -> anyhow::Result<(&'a Value, String)> {
    let mut at = start.to_owned();
    for _ in 0..MAX_REF_HOPS {
        let Some(target) = schema.get("$ref").and_then(Value::as_str) else {
            return Ok((schema, at));
        };
        let name = target.strip_prefix(COMPONENTS).ok_or_else(|| {
            anyhow!("{at}: $ref {target:?} is not a #/components/schemas/ reference")
        })?;
        schema = components
            .get(name)
            .ok_or_else(|| anyhow!("{at}: $ref {target:?} names no schema"))?;
        at = format!("components.schemas.{name}");
    }
    bail!("{start}: $ref chain longer than {MAX_REF_HOPS}")
}

/// The component schemas, translated when first reached (so that schemas no payload uses are
/// never read).
struct Defs<'a> {
    raw: &'a Map<String, Value>,
    v30: bool,
    done: HashMap<String, Value>,
}

impl Defs<'_> {
    fn get(&mut self, name: &str) -> anyhow::Result<&Value> {
        if !self.done.contains_key(name) {
            let raw = self
                .raw
                .get(name)
                .ok_or_else(|| anyhow!("$ref {COMPONENTS}{name} names no schema"))?;
            let translated = translate(raw, self.v30, &format!("components.schemas.{name}"))?;
            self.done.insert(name.to_owned(), translated);
        }
        Ok(&self.done[name])
    }
}

/// Compiles `root` as a 2020-12 document whose `$defs` hold the component schemas it reaches.
fn build_with_defs(root: Value, defs: &mut Defs<'_>) -> anyhow::Result<Validator> {
    let mut document = match root {
        Value::Object(obj) => obj,
        other => {
            let mut obj = Map::new();
            obj.insert("allOf".into(), json!([other]));
            obj
        }
    };
    let mut reached = Map::new();
    let mut stack = Vec::new();
    document.values().for_each(|v| refs_in(v, &mut stack));
    if let Some(name) = document
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(DEFS))
    {
        stack.push(name.to_owned());
    }
    while let Some(name) = stack.pop() {
        if !reached.contains_key(&name) {
            let schema = defs.get(&name)?.clone();
            refs_in(&schema, &mut stack);
            reached.insert(name, schema);
        }
    }
    document.insert("$schema".into(), Value::String(DIALECT_2020_12.into()));
    document.insert("$defs".into(), Value::Object(reached));
    compile(&Value::Object(document), Some(Draft::Draft202012))
}

/// Pushes the name of every `#/$defs/NAME` reference in `value` (already translated).
fn refs_in(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(obj) => {
            if let Some(name) = obj
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(DEFS))
            {
                out.push(name.to_owned());
            }
            obj.values().for_each(|v| refs_in(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs_in(v, out)),
        _ => {}
    }
}

/// Keywords whose value is one schema.
const SCHEMA_KEYWORDS: &[&str] = &[
    "additionalProperties",
    "items",
    "not",
    "contains",
    "propertyNames",
    "if",
    "then",
    "else",
    "unevaluatedProperties",
    "unevaluatedItems",
    "additionalItems",
];
/// Keywords whose value is an array of schemas.
const SCHEMA_ARRAY_KEYWORDS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names to schemas.
const SCHEMA_MAP_KEYWORDS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

/// One OpenAPI schema object as a JSON Schema 2020-12 one: references rewritten to `$defs`,
/// OpenAPI 3.0's differences translated (`v30`). `at` names it in errors.
fn translate(schema: &Value, v30: bool, at: &str) -> anyhow::Result<Value> {
    let Value::Object(obj) = schema else {
        return match schema {
            Value::Bool(_) if !v30 => Ok(schema.clone()),
            _ => bail!("{at} must be a schema object"),
        };
    };
    let mut rewritten = None;
    if let Some(target) = obj.get("$ref") {
        let target = target
            .as_str()
            .ok_or_else(|| anyhow!("{at}.$ref must be a string"))?;
        let to = match target.strip_prefix(COMPONENTS) {
            Some(name) => format!("{DEFS}{name}"),
            None if target.starts_with('#') => bail!(
                "{at}: $ref {target:?} is not resolved: only #/components/schemas/ references are"
            ),
            None => bail!("{at}: $ref {target:?} is not fetched: copy that schema into the file"),
        };
        if v30 {
            // OpenAPI 3.0: a $ref's siblings are ignored.
            return Ok(json!({ "$ref": to }));
        }
        rewritten = Some(to);
    }
    let mut out = Map::new();
    for (key, value) in obj {
        let translated = if key == "$ref" {
            Value::String(rewritten.take().unwrap_or_default())
        } else if SCHEMA_KEYWORDS.contains(&key.as_str()) && !value.is_boolean() {
            translate(value, v30, &format!("{at}.{key}"))?
        } else if SCHEMA_ARRAY_KEYWORDS.contains(&key.as_str()) {
            let items = value
                .as_array()
                .ok_or_else(|| anyhow!("{at}.{key} must be an array"))?;
            Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| translate(item, v30, &format!("{at}.{key}[{i}]")))
                    .collect::<anyhow::Result<_>>()?,
            )
        } else if SCHEMA_MAP_KEYWORDS.contains(&key.as_str()) {
            let map = value
                .as_object()
                .ok_or_else(|| anyhow!("{at}.{key} must be an object"))?;
            Value::Object(
                map.iter()
                    .map(|(name, item)| {
                        Ok((
                            name.clone(),
                            translate(item, v30, &format!("{at}.{key}.{name}"))?,
                        ))
                    })
                    .collect::<anyhow::Result<_>>()?,
            )
        } else {
            value.clone()
        };
        out.insert(key.clone(), translated);
    }
    bound_integer_format(&mut out);
    if v30 {
        translate_30(&mut out);
    }
    Ok(Value::Object(out))
}

/// OpenAPI 3.0's own keywords in their JSON Schema form.
fn translate_30(schema: &mut Map<String, Value>) {
    for (flag, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if let Some(Value::Bool(exclusive)) = schema.get(flag).cloned() {
            schema.remove(flag);
            if exclusive {
                if let Some(limit) = schema.remove(bound) {
                    schema.insert(flag.into(), limit);
                }
            }
        }
    }
    if schema.remove("nullable") != Some(Value::Bool(true)) {
        return;
    }
    let composed = ["allOf", "anyOf", "oneOf", "not"]
        .iter()
        .any(|k| schema.contains_key(*k));
    match schema.get_mut("type") {
        Some(Value::String(t)) if !composed => {
            let t = std::mem::take(t);
            schema.insert("type".into(), json!([t, "null"]));
        }
        Some(Value::Array(types)) if !composed => {
            if !types.contains(&json!("null")) {
                types.push(json!("null"));
            }
        }
        _ => {
            // null is allowed outright (as upstream's validator allows it), else the rest applies.
            let rest = std::mem::take(schema);
            schema.insert("anyOf".into(), json!([{ "type": "null" }, rest]));
            return;
        }
    }
    if let Some(Value::Array(options)) = schema.get_mut("enum") {
        if !options.contains(&Value::Null) {
            options.push(Value::Null);
        }
    }
}

/// `format: int32`/`int64` on an integer bound it to that range (OpenAPI's meaning; JSON Schema
/// validators ignore those formats).
fn bound_integer_format(schema: &mut Map<String, Value>) {
    let (low, high) = match schema.get("format").and_then(Value::as_str) {
        Some("int32") => (json!(i32::MIN), json!(i32::MAX)),
        Some("int64") => (json!(i64::MIN), json!(i64::MAX)),
        _ => return,
    };
    let integer = match schema.get("type") {
        Some(Value::String(t)) => t == "integer",
        Some(Value::Array(types)) => types.contains(&json!("integer")),
        _ => false,
    };
    if !integer {
        return;
    }
    let bound = json!({ "minimum": low, "maximum": high });
    match schema.get_mut("allOf") {
        Some(Value::Array(all)) => all.push(bound),
        _ => {
            schema.insert("allOf".into(), json!([bound]));
        }
    }
}

// ---- Mapping by event type ----

/// The schemas of a mapping by event type.
fn by_event_type(doc: &Map<String, Value>) -> anyhow::Result<Select> {
    if let Some(key) = doc
        .keys()
        .find(|k| !matches!(k.as_str(), "eventTypes" | "$defs" | "$schema"))
    {
        bail!("{key:?}: a mapping by event type holds only eventTypes, $defs and $schema");
    }
    let types = doc
        .get("eventTypes")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow!("eventTypes must map event types to schemas"))?;
    if types.is_empty() {
        bail!("eventTypes lists no event type");
    }
    let mut by_type = HashMap::new();
    for (event_type, schema) in types {
        let mut document = Map::new();
        if let Some(dialect) = doc.get("$schema") {
            document.insert("$schema".into(), dialect.clone());
        }
        if let Some(defs) = doc.get("$defs") {
            document.insert("$defs".into(), defs.clone());
        }
        document.insert("allOf".into(), json!([schema]));
        let validator = compile(&Value::Object(document), None)
            .with_context(|| format!("eventTypes.{event_type}"))?;
        by_type.insert(
            event_type.clone(),
            Arc::new(Payload {
                name: format!("eventTypes.{event_type}"),
                validator,
            }),
        );
    }
    Ok(Select::EventType(by_type))
}

// ---- Field errors ----

/// `error` as a field error named by its path in the event.
fn describe(error: &ValidationError<'_>, errors: &mut FieldErrors) {
    let field = field_name(error);
    let instance: &Value = error.instance();
    let rule = match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            let field = format!("{field}.{}", shorten(&name, MAX_QUOTED));
            errors.add(&field, format!("{field} is required"));
            return;
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            for name in unexpected.iter().take(MAX_ERRORS_PER_EVENT) {
                let field = format!("{field}.{}", shorten(name, MAX_QUOTED));
                errors.add(
                    &field,
                    format!("{field} is not a property the schema allows"),
                );
            }
            return;
        }
        ValidationErrorKind::Type { kind: types } => {
            let mut names: Vec<&str> = match types {
                TypeKind::Single(t) => vec![t.as_str()],
                TypeKind::Multiple(set) => set.iter().map(|t| t.as_str()).collect(),
            };
            // "number or null" reads better than the validator's order, null first.
            names.sort_by_key(|t| *t == "null");
            format!("must be {} (got {})", names.join(" or "), kind(instance))
        }
        ValidationErrorKind::Enum { options } => {
            let listed: Vec<String> = options
                .as_array()
                .map(|o| o.iter().take(8).map(quote_value).collect())
                .unwrap_or_default();
            let more = options.as_array().map_or(0, |o| o.len().saturating_sub(8));
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("must be one of {}{more}", listed.join(", "))
        }
        ValidationErrorKind::Constant { expected_value } => {
            format!("must be {}", quote_value(expected_value))
        }
        ValidationErrorKind::Format { format } => format!("must be a valid {format}"),
        ValidationErrorKind::MinLength { limit } => {
            format!("must be at least {limit} characters")
        }
        ValidationErrorKind::MaxLength { limit } => format!("must be at most {limit} characters"),
        ValidationErrorKind::Minimum { limit } => format!("must be at least {limit}"),
        ValidationErrorKind::Maximum { limit } => format!("must be at most {limit}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => format!("must be more than {limit}"),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        ValidationErrorKind::MultipleOf { multiple_of } => {
            format!("must be a multiple of {multiple_of}")
        }
        ValidationErrorKind::MinItems { limit } => format!("must hold at least {limit} items"),
        ValidationErrorKind::MaxItems { limit } => format!("must hold at most {limit} items"),
        ValidationErrorKind::MinProperties { limit } => {
            format!("must hold at least {limit} properties")
        }
        ValidationErrorKind::MaxProperties { limit } => {
            format!("must hold at most {limit} properties")
        }
        ValidationErrorKind::UniqueItems => "must not repeat an item".to_owned(),
        ValidationErrorKind::Pattern { pattern } => {
            format!("must match the pattern {}", quote(pattern))
        }
        ValidationErrorKind::OneOfNotValid { .. } | ValidationErrorKind::AnyOf { .. } => {
            "matches none of the schemas it may take".to_owned()
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            "matches more than one of the schemas of its oneOf".to_owned()
        }
        ValidationErrorKind::Not { .. } => "matches a schema it must not".to_owned(),
        ValidationErrorKind::FalseSchema => "is not allowed here".to_owned(),
        ValidationErrorKind::Contains => "holds no item the schema's contains accepts".to_owned(),
        ValidationErrorKind::PropertyNames { .. } => {
            "has a property name the schema refuses".to_owned()
        }
        other => format!("breaks the schema's {} rule", other.keyword()),
    };
    errors.add(&field, format!("{field} {rule}"));
}

/// The error's place in the event: `event_data`, then `.name` per property and `[i]` per item.
fn field_name(error: &ValidationError<'_>) -> String {
    let mut out = String::from("event_data");
    for segment in error.instance_path().segments() {
        match segment {
            LocationSegment::Property(name) => {
                out.push('.');
                out.push_str(&shorten(&name, MAX_QUOTED));
            }
            LocationSegment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A JSON kind, for "got …".
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `s` in quotes, cut to [`MAX_QUOTED`] characters.
fn quote(s: &str) -> String {
    format!("{:?}", shorten(s, MAX_QUOTED))
}

/// A schema value (an enum option, a const) as JSON, cut short.
fn quote_value(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        other => shorten(&other.to_string(), MAX_QUOTED),
    }
}

/// `s`, cut to `max` characters with an ellipsis.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const UPSTREAM: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/upstream-data-storage-v1.yaml"
    );

    /// How many values choose a schema (1 for a single schema).
    fn count(schemas: &EventDataSchemas) -> usize {
        match &schemas.select {
            Select::All(_) => 1,
            Select::Discriminator { by_value, .. } => by_value.len(),
            Select::EventType(by_type) => by_type.len(),
        }
    }

    fn upstream() -> EventDataSchemas {
        EventDataSchemas::load(Path::new(UPSTREAM)).unwrap()
    }

    fn errors_of(schemas: &EventDataSchemas, event_type: &str, data: Value) -> FieldErrors {
        let mut errors = FieldErrors::default();
        schemas.check(event_type, &data, &mut errors);
        errors
    }

    fn gateway() -> Value {
        json!({
            "event_type": "gateway.signal.received", "signal_type": "alert",
            "signal_name": "HighCPU", "namespace": "production", "fingerprint": "fp-1"
        })
    }

    fn load_error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schema.yaml");
        std::fs::write(&path, text).unwrap();
        let e = EventDataSchemas::load(&path).unwrap_err().to_string();
        assert!(e.contains(KEY) && e.contains("schema.yaml"), "{e}");
        e
    }

    #[test]
    fn upstream_spec_is_chosen_by_the_discriminator_inside_event_data() {
        let schemas = upstream();
        // Upstream's mapping lists 142 event types over 94 payload schemas.
        assert_eq!(count(&schemas), 142, "{schemas:?}");
        assert!(errors_of(&schemas, "gateway.signal.received", gateway()).is_empty());
        // The outer event_type does not choose: event_data.event_type does.
        assert!(errors_of(&schemas, "anything.else", gateway()).is_empty());

        let mut broken = gateway();
        broken.as_object_mut().unwrap().remove("signal_name");
        broken["occurrence_count"] = json!("three");
        broken["signal_type"] = json!("page");
        let errors = errors_of(&schemas, "gateway.signal.received", broken);
        assert_eq!(
            errors.0["event_data.signal_name"],
            "event_data.signal_name is required"
        );
        assert_eq!(
            errors.0["event_data.occurrence_count"],
            "event_data.occurrence_count must be integer (got string)"
        );
        assert!(
            errors.0["event_data.signal_type"].contains(r#"must be one of "alert""#),
            "{errors:?}"
        );
    }

    #[test]
    fn missing_or_unmapped_discriminators_are_refused_as_upstream_refuses_them() {
        let schemas = upstream();
        let mut data = gateway();
        data.as_object_mut().unwrap().remove("event_type");
        let errors = errors_of(&schemas, "gateway.signal.received", data);
        assert!(
            errors.0["event_data.event_type"].contains("is required"),
            "{errors:?}"
        );

        let mut data = gateway();
        data["event_type"] = json!("x".repeat(10_000));
        let errors = errors_of(&schemas, "gateway.signal.received", data);
        let message = &errors.0["event_data.event_type"];
        assert!(message.contains("names no payload schema"), "{message}");
        assert!(
            message.len() < 200,
            "the value is not echoed whole: {message}"
        );

        let errors = errors_of(&schemas, "t", json!({"event_type": 7}));
        assert!(errors.0["event_data.event_type"].contains("must be a string"));
    }

    #[test]
    fn nested_paths_name_array_items_and_formats_and_int32_are_checked() {
        let schemas = upstream();
        let data = json!({
            "event_type": "workflow.catalog.actions_listed",
            "query": {"top_k": 3_000_000_000u64},
            "results": {"total_found": 1, "returned": 1, "workflows": [{
                "workflow_id": "not-a-uuid", "title": "t", "rank": 1,
                "scoring": {"confidence": 0.5}
            }, {
                "workflow_id": "01890a5d-ac96-774b-bcce-b302099a8057", "rank": 1,
                "scoring": {"confidence": 0.5}
            }]},
            "search_metadata": {"duration_ms": 3_000_000_000u64}
        });
        let errors = errors_of(&schemas, "workflow.catalog.actions_listed", data);
        assert_eq!(
            errors.0["event_data.results.workflows[0].workflow_id"],
            "event_data.results.workflows[0].workflow_id must be a valid uuid"
        );
        assert!(errors
            .0
            .contains_key("event_data.results.workflows[1].title"));
        assert!(
            errors.0["event_data.query.top_k"].contains("at most 2147483647"),
            "{errors:?}"
        );
        // int64 is wider.
        assert!(!errors
            .0
            .contains_key("event_data.search_metadata.duration_ms"));
    }

    #[test]
    fn openapi_30_nullable_admits_null() {
        let schemas = upstream();
        let data = json!({
            "event_type": "effectiveness.health.assessed", "correlation_id": "c",
            "namespace": "n", "component": "health", "score": null
        });
        let errors = errors_of(&schemas, "effectiveness.health.assessed", data.clone());
        assert!(errors.is_empty(), "{errors:?}");
        let mut not_number = data;
        not_number["score"] = json!("high");
        let errors = errors_of(&schemas, "effectiveness.health.assessed", not_number);
        assert_eq!(
            errors.0["event_data.score"],
            "event_data.score must be number or null (got string)"
        );
    }

    #[test]
    fn openapi_30_keywords_are_translated() {
        let doc = json!({
            "openapi": "3.0.3",
            "components": {"schemas": {
                "AuditEventRequest": {"properties": {"event_data": {"$ref": "#/components/schemas/Data"}}},
                "Data": {"type": "object", "properties": {
                    "level": {"type": "string", "enum": ["low", "high"], "nullable": true},
                    "ratio": {"type": "number", "minimum": 0, "exclusiveMinimum": true},
                    "nullable": {"$ref": "#/components/schemas/Name", "description": "ignored"}
                }},
                "Name": {"type": "string", "minLength": 2}
            }}
        });
        let schemas = EventDataSchemas::from_document(&doc).unwrap();
        assert!(errors_of(&schemas, "t", json!({"level": null, "nullable": "ok"})).is_empty());
        let errors = errors_of(
            &schemas,
            "t",
            json!({"level": "mid", "ratio": 0, "nullable": "x"}),
        );
        assert!(
            errors.0["event_data.level"].contains("one of"),
            "{errors:?}"
        );
        assert_eq!(
            errors.0["event_data.ratio"],
            "event_data.ratio must be more than 0"
        );
        assert!(errors.0["event_data.nullable"].contains("at least 2 characters"));
    }

    #[test]
    fn openapi_31_schemas_are_json_schema_already() {
        let doc = json!({
            "openapi": "3.1.0",
            "components": {"schemas": {
                "AuditEventRequest": {"properties": {"event_data": {
                    "oneOf": [{"$ref": "#/components/schemas/Named"}],
                    "discriminator": {"propertyName": "kind"}
                }}},
                "Named": {"type": "object", "required": ["kind"], "properties": {
                    "kind": {"const": "Named"},
                    "name": {"$ref": "#/components/schemas/Name", "maxLength": 3},
                    "nullable": {"type": ["string", "null"], "nullable": false}
                }},
                "Name": {"type": "string", "minLength": 2}
            }}
        });
        let schemas = EventDataSchemas::from_document(&doc).unwrap();
        // Without a mapping, the discriminator's value is the schema's name.
        assert_eq!(count(&schemas), 1);
        let ok = json!({"kind": "Named", "name": "abc", "nullable": null});
        assert!(errors_of(&schemas, "t", ok).is_empty());
        // A $ref's siblings apply in 3.1.
        let errors = errors_of(&schemas, "t", json!({"kind": "Named", "name": "abcd"}));
        assert!(
            errors.0["event_data.name"].contains("at most 3"),
            "{errors:?}"
        );
    }

    #[test]
    fn the_upstream_spec_as_json_loads_the_same() {
        let yaml = std::fs::read_to_string(UPSTREAM).unwrap();
        let doc: Value = serde_norway::from_str(&yaml).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.json");
        std::fs::write(&path, serde_json::to_string(&doc).unwrap()).unwrap();
        let schemas = EventDataSchemas::load(&path).unwrap();
        assert_eq!(count(&schemas), 142);
        assert!(errors_of(&schemas, "t", gateway()).is_empty());
    }

    #[test]
    fn a_mapping_by_event_type_checks_listed_types_and_accepts_others() {
        let doc = json!({
            "$defs": {"id": {"type": "string", "format": "uuid"}},
            "eventTypes": {
                "order.placed": {
                    "type": "object", "required": ["order_id", "lines"],
                    "properties": {
                        "order_id": {"$ref": "#/$defs/id"},
                        "lines": {"type": "array", "items": {"type": "object", "required": ["sku"]}}
                    },
                    "additionalProperties": false
                }
            }
        });
        let schemas = EventDataSchemas::from_document(&doc).unwrap();
        let errors = errors_of(
            &schemas,
            "order.placed",
            json!({"order_id": "nope", "lines": [{"sku": 1}, {}], "extra": true}),
        );
        assert_eq!(
            errors.0.keys().collect::<Vec<_>>(),
            [
                "event_data.extra",
                "event_data.lines[1].sku",
                "event_data.order_id"
            ],
            "{errors:?}"
        );
        assert!(errors_of(&schemas, "order.shipped", json!({"anything": 1})).is_empty());
    }

    #[test]
    fn a_single_schema_applies_to_every_event() {
        let doc = json!({"type": "object", "required": ["who"]});
        let schemas = EventDataSchemas::from_document(&doc).unwrap();
        for event_type in ["a", "b"] {
            let errors = errors_of(&schemas, event_type, json!({}));
            assert_eq!(errors.0["event_data.who"], "event_data.who is required");
        }
        assert!(errors_of(&schemas, "a", json!({"who": 1})).is_empty());
    }

    #[test]
    fn errors_per_event_are_bounded() {
        let doc = json!({"type": "object", "additionalProperties": {"type": "integer"}});
        let schemas = EventDataSchemas::from_document(&doc).unwrap();
        let data: Map<String, Value> = (0..100).map(|i| (format!("k{i}"), json!("s"))).collect();
        let errors = errors_of(&schemas, "t", Value::Object(data));
        assert_eq!(errors.0.len(), MAX_ERRORS_PER_EVENT);
    }

    #[test]
    fn bad_files_name_the_key_the_file_and_the_fault() {
        for (text, fault) in [
            ("openapi: 3.0.3\ncomponents: {schemas: {}}\n", "AuditEventRequest"),
            ("openapi: '2.0'\n", "only OpenAPI 3.0 and 3.1"),
            (
                "openapi: 3.1.0\ncomponents: {schemas: {AuditEventRequest: {properties: {event_data: {$ref: '#/components/schemas/Nope'}}}}}\n",
                "names no schema",
            ),
            (
                "openapi: 3.0.3\ncomponents: {schemas: {AuditEventRequest: {properties: {event_data: {properties: {a: {$ref: 'https://example.com/s.json'}}}}}}}\n",
                "not fetched",
            ),
            (
                "openapi: 3.0.3\ncomponents: {schemas: {AuditEventRequest: {properties: {event_data: {oneOf: [{$ref: '#/components/schemas/A'}], discriminator: {propertyName: kind, mapping: {a: '#/components/schemas/B'}}}}}, A: {type: object}}}\n",
                "mapping.a: no schema",
            ),
            ("{\"type\": 12}", "does not compile"),
            ("eventTypes: {a: {type: object}}\nextra: 1\n", "\"extra\""),
            ("[1, 2]", "must be an OpenAPI document"),
            ("key: [unclosed", "neither JSON nor YAML"),
        ] {
            let e = load_error(text);
            assert!(e.contains(fault), "{text}: {e}");
        }
        let e = EventDataSchemas::load(Path::new("/nonexistent/schema.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(KEY) && e.contains("cannot read"), "{e}");
    }
}
