//! The registry's state, rebuilt by applying the `_schemas` records in
//! log order, and the rules that turn a request into records.
//!
//! [`Store::apply`] is deterministic: every process that reads the same
//! records in the same order reaches the same state, whatever order its
//! own requests ran in. That is what lets several registries (and the
//! broker's validator) share one topic without a leader: a writer plans
//! its records against the state it has ([`Store::plan_register`] and
//! friends), appends them, waits until its reader has applied them, and
//! then checks that they won. A record that conflicts with an earlier one
//! (the same id for a different schema, the same subject version for a
//! different id) is ignored by everyone, and its writer plans again.
//!
//! Nothing here does I/O; the store is shared behind a lock by the REST
//! server ([`crate::api`]) and by the broker's payload validation.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use crate::compat::{self, CompatibilityLevel, Previous};
use crate::error::RegistryError;
use crate::records::{
    ClearSubjectValue, ConfigValue, DeleteSubjectValue, IdFloorValue, Mode, ModeValue, Record,
    SchemaValue,
};
use crate::schema::{self, ParsedSchema, SchemaReference, SchemaType, MAX_REFERENCES};

/// Longest subject name accepted.
pub const MAX_SUBJECT_BYTES: usize = 4096;

/// A version in a request path: a number or `latest` (also `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Number(i32),
}

impl VersionSpec {
    pub fn parse(s: &str) -> Result<VersionSpec, RegistryError> {
        if s.eq_ignore_ascii_case("latest") || s == "-1" {
            return Ok(VersionSpec::Latest);
        }
        match s.parse::<i32>() {
            Ok(n) if n >= 1 => Ok(VersionSpec::Number(n)),
            _ => Err(RegistryError::InvalidVersion(s.to_string())),
        }
    }
}

/// A schema's content, shared by every subject version that uses it.
#[derive(Debug)]
pub struct StoredSchema {
    pub id: i32,
    pub schema_type: SchemaType,
    /// The canonical text (what is returned as `schema`).
    pub canonical: String,
    pub references: Vec<SchemaReference>,
    /// Subject versions registered with this id, deleted or not.
    versions: BTreeSet<(String, i32)>,
    normalized: OnceLock<String>,
    parsed: OnceLock<Result<Arc<ParsedSchema>, String>>,
}

impl StoredSchema {
    fn normalized(&self) -> &str {
        self.normalized.get_or_init(|| {
            schema::normalized_text(&self.canonical).unwrap_or_else(|_| self.canonical.clone())
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionEntry {
    pub id: i32,
    pub deleted: bool,
}

#[derive(Debug, Default)]
struct Subject {
    versions: BTreeMap<i32, VersionEntry>,
    config: Option<CompatibilityLevel>,
    mode: Option<Mode>,
}

impl Subject {
    fn live(&self) -> impl DoubleEndedIterator<Item = (&i32, &VersionEntry)> {
        self.versions.iter().filter(|(_, v)| !v.deleted)
    }

    fn has_live(&self) -> bool {
        self.live().next().is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ContentKey {
    schema_type: SchemaType,
    canonical: String,
    references: Vec<SchemaReference>,
}

/// What applying a record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Accepted,
    /// Ignored because it conflicts with the state (or is malformed).
    Rejected(String),
}

/// A schema in a register, lookup or compatibility request.
#[derive(Debug, Clone, Default)]
pub struct SchemaRequest {
    pub schema: String,
    pub schema_type: SchemaType,
    pub references: Vec<SchemaReference>,
    /// IMPORT mode only: the id (and version) to register with.
    pub id: Option<i32>,
    pub version: Option<i32>,
}

/// What a registration needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterPlan {
    /// The subject already has this schema as a live version.
    Existing { id: i32, version: i32 },
    /// Append `record`; it registers `id` as `version`.
    New {
        record: Record,
        id: i32,
        version: i32,
    },
}

/// The registry state.
#[derive(Debug, Default)]
pub struct Store {
    schemas: HashMap<i32, StoredSchema>,
    by_content: HashMap<ContentKey, i32>,
    subjects: BTreeMap<String, Subject>,
    global_config: Option<CompatibilityLevel>,
    global_mode: Option<Mode>,
    /// Highest id ever used (never goes down, see `ID_FLOOR`).
    max_id: i32,
}

/// Subject names: 1 to [`MAX_SUBJECT_BYTES`] bytes, no control
/// characters, not Confluent's reserved `__GLOBAL`.
pub fn check_subject(subject: &str) -> Result<(), RegistryError> {
    if subject.is_empty()
        || subject.len() > MAX_SUBJECT_BYTES
        || subject.chars().any(char::is_control)
        || subject == "__GLOBAL"
    {
        return Err(RegistryError::InvalidSubject(
            subject.chars().take(200).collect(),
        ));
    }
    Ok(())
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    // ------------------------------------------------------------ apply

    /// Applies one record of the topic.
    pub fn apply(&mut self, record: Record) -> Applied {
        match record {
            Record::Schema(subject, version, Some(value)) => {
                self.apply_schema(subject, version, value)
            }
            Record::Schema(subject, version, None) => {
                self.remove_version(&subject, version);
                Applied::Accepted
            }
            Record::Config(subject, value) => {
                let level = value.map(|v| v.compatibility_level);
                match subject {
                    None => self.global_config = level,
                    Some(s) => match level {
                        Some(l) => self.subjects.entry(s).or_default().config = Some(l),
                        None => {
                            if let Some(sub) = self.subjects.get_mut(&s) {
                                sub.config = None;
                            }
                            self.forget_if_empty(&s);
                        }
                    },
                }
                Applied::Accepted
            }
            Record::Mode(subject, value) => {
                let mode = value.map(|v| v.mode);
                match subject {
                    None => self.global_mode = mode,
                    Some(s) => match mode {
                        Some(m) => self.subjects.entry(s).or_default().mode = Some(m),
                        None => {
                            if let Some(sub) = self.subjects.get_mut(&s) {
                                sub.mode = None;
                            }
                            self.forget_if_empty(&s);
                        }
                    },
                }
                Applied::Accepted
            }
            Record::DeleteSubject(subject, Some(value)) => {
                if let Some(sub) = self.subjects.get_mut(&subject) {
                    for (_, v) in sub.versions.range_mut(..=value.version) {
                        v.deleted = true;
                    }
                }
                Applied::Accepted
            }
            Record::ClearSubject(subject, Some(_)) => {
                let deleted: Vec<i32> = self
                    .subjects
                    .get(&subject)
                    .map(|s| {
                        s.versions
                            .iter()
                            .filter(|(_, v)| v.deleted)
                            .map(|(n, _)| *n)
                            .collect()
                    })
                    .unwrap_or_default();
                for v in deleted {
                    self.remove_version(&subject, v);
                }
                Applied::Accepted
            }
            Record::IdFloor(Some(IdFloorValue { id })) => {
                self.max_id = self.max_id.max(id);
                Applied::Accepted
            }
            Record::DeleteSubject(_, None)
            | Record::ClearSubject(_, None)
            | Record::IdFloor(None)
            | Record::Noop => Applied::Accepted,
        }
    }

    fn apply_schema(&mut self, subject: String, version: i32, value: SchemaValue) -> Applied {
        if value.subject != subject || value.version != version || version < 1 || value.id < 1 {
            return Applied::Rejected(format!(
                "schema record for {subject} version {version} carries subject {} version {} id {}",
                value.subject, value.version, value.id
            ));
        }
        let content = ContentKey {
            schema_type: value.schema_type,
            canonical: value.schema,
            references: value.references,
        };
        if let Some(existing) = self.schemas.get(&value.id) {
            if existing.canonical != content.canonical
                || existing.references != content.references
                || existing.schema_type != content.schema_type
            {
                return Applied::Rejected(format!(
                    "id {} is already taken by another schema",
                    value.id
                ));
            }
        } else if let Some(other) = self.by_content.get(&content) {
            return Applied::Rejected(format!(
                "the schema is already registered with id {other}, not {}",
                value.id
            ));
        }
        let sub = self.subjects.entry(subject.clone()).or_default();
        if let Some(current) = sub.versions.get(&version) {
            if current.id != value.id {
                return Applied::Rejected(format!(
                    "{subject} version {version} already has id {}",
                    current.id
                ));
            }
        }
        sub.versions.insert(
            version,
            VersionEntry {
                id: value.id,
                deleted: value.deleted,
            },
        );
        let id = value.id;
        self.max_id = self.max_id.max(id);
        let stored = self.schemas.entry(id).or_insert_with(|| StoredSchema {
            id,
            schema_type: content.schema_type,
            canonical: content.canonical.clone(),
            references: content.references.clone(),
            versions: BTreeSet::new(),
            normalized: OnceLock::new(),
            parsed: OnceLock::new(),
        });
        stored.versions.insert((subject, version));
        self.by_content.entry(content).or_insert(id);
        Applied::Accepted
    }

    fn remove_version(&mut self, subject: &str, version: i32) {
        let Some(sub) = self.subjects.get_mut(subject) else {
            return;
        };
        let Some(entry) = sub.versions.remove(&version) else {
            return;
        };
        if let Some(stored) = self.schemas.get_mut(&entry.id) {
            stored.versions.remove(&(subject.to_string(), version));
            if stored.versions.is_empty() {
                let key = ContentKey {
                    schema_type: stored.schema_type,
                    canonical: stored.canonical.clone(),
                    references: stored.references.clone(),
                };
                self.by_content.remove(&key);
                self.schemas.remove(&entry.id);
            }
        }
        self.forget_if_empty(subject);
    }

    fn forget_if_empty(&mut self, subject: &str) {
        if let Some(s) = self.subjects.get(subject) {
            if s.versions.is_empty() && s.config.is_none() && s.mode.is_none() {
                self.subjects.remove(subject);
            }
        }
    }

    // ------------------------------------------------------------ queries

    /// Highest id ever registered.
    pub fn max_id(&self) -> i32 {
        self.max_id
    }

    pub fn schema(&self, id: i32) -> Option<&StoredSchema> {
        self.schemas.get(&id)
    }

    /// A schema by id, or 40403.
    pub fn schema_by_id(&self, id: i32) -> Result<&StoredSchema, RegistryError> {
        self.schemas
            .get(&id)
            .ok_or_else(|| RegistryError::SchemaNotFound(id.to_string()))
    }

    /// Schemas in id order with the subject versions that use them.
    pub fn schemas(&self) -> Vec<&StoredSchema> {
        let mut all: Vec<&StoredSchema> = self.schemas.values().collect();
        all.sort_by_key(|s| s.id);
        all
    }

    /// The subject versions (subject, version, deleted) registered with `id`.
    pub fn id_versions(&self, id: i32, include_deleted: bool) -> Vec<(String, i32)> {
        let Some(s) = self.schemas.get(&id) else {
            return Vec::new();
        };
        s.versions
            .iter()
            .filter(|(sub, v)| include_deleted || !self.is_deleted(sub, *v))
            .cloned()
            .collect()
    }

    fn is_deleted(&self, subject: &str, version: i32) -> bool {
        self.subjects
            .get(subject)
            .and_then(|s| s.versions.get(&version))
            .is_none_or(|v| v.deleted)
    }

    /// Subjects (sorted). `include_deleted` adds soft-deleted ones,
    /// `deleted_only` lists only those.
    pub fn subjects(&self, prefix: &str, include_deleted: bool, deleted_only: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .filter(|(_, s)| !s.versions.is_empty())
            .filter(|(_, s)| {
                let live = s.has_live();
                if deleted_only {
                    !live
                } else {
                    live || include_deleted
                }
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn subject(&self, subject: &str, include_deleted: bool) -> Result<&Subject, RegistryError> {
        match self.subjects.get(subject) {
            Some(s) if s.has_live() || (include_deleted && !s.versions.is_empty()) => Ok(s),
            _ => Err(RegistryError::SubjectNotFound(subject.to_string())),
        }
    }

    /// Version numbers of a subject.
    pub fn versions(
        &self,
        subject: &str,
        include_deleted: bool,
        deleted_only: bool,
    ) -> Result<Vec<i32>, RegistryError> {
        let s = self.subject(subject, include_deleted || deleted_only)?;
        Ok(s.versions
            .iter()
            .filter(|(_, v)| {
                if deleted_only {
                    v.deleted
                } else {
                    include_deleted || !v.deleted
                }
            })
            .map(|(n, _)| *n)
            .collect())
    }

    /// One version of a subject: (version, entry, schema).
    pub fn version(
        &self,
        subject: &str,
        spec: VersionSpec,
        include_deleted: bool,
    ) -> Result<(i32, VersionEntry, &StoredSchema), RegistryError> {
        let s = self.subject(subject, include_deleted)?;
        let found = match spec {
            VersionSpec::Latest => s
                .versions
                .iter()
                .rev()
                .find(|(_, v)| include_deleted || !v.deleted),
            VersionSpec::Number(n) => s
                .versions
                .get_key_value(&n)
                .filter(|(_, v)| include_deleted || !v.deleted),
        };
        let (n, entry) = found.ok_or_else(|| {
            RegistryError::VersionNotFound(match spec {
                VersionSpec::Latest => "latest".to_string(),
                VersionSpec::Number(n) => n.to_string(),
            })
        })?;
        let stored = self.schema_by_id(entry.id)?;
        Ok((*n, *entry, stored))
    }

    /// Ids of live schemas that reference `subject` `version`.
    pub fn referenced_by(&self, subject: &str, version: i32) -> Vec<i32> {
        let mut ids: Vec<i32> = self
            .schemas
            .values()
            .filter(|s| {
                s.references
                    .iter()
                    .any(|r| r.subject == subject && r.version == version)
            })
            .filter(|s| s.versions.iter().any(|(sub, v)| !self.is_deleted(sub, *v)))
            .map(|s| s.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The subject's own compatibility level.
    pub fn subject_config(&self, subject: &str) -> Option<CompatibilityLevel> {
        self.subjects.get(subject).and_then(|s| s.config)
    }

    pub fn global_config(&self) -> CompatibilityLevel {
        self.global_config.unwrap_or_default()
    }

    /// The level that applies to a subject.
    pub fn compatibility(&self, subject: &str) -> CompatibilityLevel {
        self.subject_config(subject)
            .unwrap_or_else(|| self.global_config())
    }

    pub fn subject_mode(&self, subject: &str) -> Option<Mode> {
        self.subjects.get(subject).and_then(|s| s.mode)
    }

    pub fn global_mode(&self) -> Mode {
        self.global_mode.unwrap_or_default()
    }

    /// The mode that applies to a subject.
    pub fn mode(&self, subject: &str) -> Mode {
        self.subject_mode(subject)
            .unwrap_or_else(|| self.global_mode())
    }

    /// The texts of every schema `references` needs, transitively,
    /// dependencies first, each once.
    pub fn dependencies(
        &self,
        references: &[SchemaReference],
    ) -> Result<Vec<String>, RegistryError> {
        let mut out = Vec::new();
        let mut done = HashSet::new();
        let mut visiting = HashSet::new();
        for r in references {
            self.collect_dependency(r, &mut out, &mut done, &mut visiting)?;
        }
        Ok(out)
    }

    fn collect_dependency(
        &self,
        r: &SchemaReference,
        out: &mut Vec<String>,
        done: &mut HashSet<(String, i32)>,
        visiting: &mut HashSet<(String, i32)>,
    ) -> Result<(), RegistryError> {
        let key = (r.subject.clone(), r.version);
        if done.contains(&key) {
            return Ok(());
        }
        if !visiting.insert(key.clone()) || visiting.len() + done.len() > MAX_REFERENCES {
            return Err(RegistryError::InvalidSchema(format!(
                "references form a cycle or exceed {MAX_REFERENCES} schemas at {} version {}",
                r.subject, r.version
            )));
        }
        let spec = if r.version == -1 {
            VersionSpec::Latest
        } else {
            VersionSpec::Number(r.version)
        };
        let (_, _, stored) = self.version(&r.subject, spec, true).map_err(|_| {
            RegistryError::InvalidSchema(format!(
                "reference '{}' names {} version {}, which does not exist",
                r.name, r.subject, r.version
            ))
        })?;
        for inner in &stored.references {
            self.collect_dependency(inner, out, done, visiting)?;
        }
        out.push(stored.canonical.clone());
        visiting.remove(&key);
        done.insert(key);
        Ok(())
    }

    /// Parses a request's schema with its references, under the rules a
    /// new schema must meet ([`schema::parse_strict`]).
    pub fn parse(
        &self,
        req: &SchemaRequest,
        normalize: bool,
    ) -> Result<ParsedSchema, RegistryError> {
        let deps = self.dependencies(&req.references)?;
        schema::parse_strict(&req.schema, &deps, normalize).map_err(|e| {
            RegistryError::InvalidSchema(format!(
                "{}, details: {e}",
                req.schema.chars().take(200).collect::<String>()
            ))
        })
    }

    /// The parsed form of a stored schema (cached).
    pub fn parsed(&self, id: i32) -> Result<Arc<ParsedSchema>, RegistryError> {
        let stored = self.schema_by_id(id)?;
        stored
            .parsed
            .get_or_init(|| {
                let deps = self
                    .dependencies(&stored.references)
                    .map_err(|e| e.to_string())?;
                schema::parse(&stored.canonical, &deps, false).map(Arc::new)
            })
            .clone()
            .map_err(|e| RegistryError::InvalidSchema(format!("stored schema {id}: {e}")))
    }

    /// Whether the subject version `v` holds the same schema as `parsed`
    /// (compared as normalised text when `normalize`).
    fn same_schema(
        &self,
        stored: &StoredSchema,
        parsed: &ParsedSchema,
        req: &SchemaRequest,
        normalize: bool,
    ) -> bool {
        stored.schema_type == req.schema_type
            && stored.references == req.references
            && (stored.canonical == parsed.canonical
                || (normalize && stored.normalized() == parsed.canonical))
    }

    /// Finds `req` among a subject's versions: (version, id).
    pub fn lookup(
        &self,
        subject: &str,
        req: &SchemaRequest,
        normalize: bool,
        include_deleted: bool,
    ) -> Result<(i32, i32), RegistryError> {
        let s = self.subject(subject, include_deleted)?;
        let parsed = self.parse(req, normalize)?;
        s.versions
            .iter()
            .rev()
            .filter(|(_, v)| include_deleted || !v.deleted)
            .find(|(_, v)| {
                self.schemas
                    .get(&v.id)
                    .is_some_and(|st| self.same_schema(st, &parsed, req, normalize))
            })
            .map(|(n, v)| (*n, v.id))
            .ok_or(RegistryError::SchemaNotInSubject)
    }

    fn previous(&self, subject: &str) -> Result<Vec<(i32, Arc<ParsedSchema>)>, RegistryError> {
        let Some(s) = self.subjects.get(subject) else {
            return Ok(Vec::new());
        };
        s.live()
            .map(|(n, v)| Ok((*n, self.parsed(v.id)?)))
            .collect()
    }

    /// Compatibility messages of `parsed` against the subject's versions
    /// under `level` (empty: compatible).
    fn compatibility_messages(
        &self,
        subject: &str,
        parsed: &ParsedSchema,
        level: CompatibilityLevel,
        only: Option<i32>,
    ) -> Result<Vec<String>, RegistryError> {
        let previous = self.previous(subject)?;
        let previous: Vec<Previous<'_>> = previous
            .iter()
            .filter(|(n, _)| only.is_none_or(|o| o == *n))
            .map(|(n, p)| Previous {
                version: *n,
                canonical: &p.canonical,
                schema: &p.schema,
            })
            .collect();
        Ok(compat::check(level, &parsed.schema, &previous))
    }

    /// `POST /compatibility/subjects/{s}/versions[/{v}]`: messages (empty
    /// when compatible). `version` None checks every version the level
    /// requires.
    pub fn test_compatibility(
        &self,
        subject: &str,
        version: Option<VersionSpec>,
        req: &SchemaRequest,
        normalize: bool,
    ) -> Result<Vec<String>, RegistryError> {
        check_subject(subject)?;
        let level = self.compatibility(subject);
        match version {
            None => {
                let parsed = self.parse(req, normalize)?;
                self.compatibility_messages(subject, &parsed, level, None)
            }
            Some(spec) => {
                let n = match (spec, self.version(subject, spec, false)) {
                    (_, Ok((n, _, _))) => n,
                    // Nothing to be incompatible with.
                    (VersionSpec::Latest, Err(_)) => return Ok(Vec::new()),
                    (VersionSpec::Number(n), Err(_)) => {
                        return Err(RegistryError::VersionNotFound(n.to_string()))
                    }
                };
                let parsed = self.parse(req, normalize)?;
                // Against one version: its level's direction, that version only.
                let level = match level {
                    CompatibilityLevel::BackwardTransitive => CompatibilityLevel::Backward,
                    CompatibilityLevel::ForwardTransitive => CompatibilityLevel::Forward,
                    CompatibilityLevel::FullTransitive => CompatibilityLevel::Full,
                    other => other,
                };
                self.compatibility_messages(subject, &parsed, level, Some(n))
            }
        }
    }

    // ------------------------------------------------------------ plans

    fn check_writable(&self, subject: &str) -> Result<Mode, RegistryError> {
        let mode = self.mode(subject);
        if mode == Mode::Readonly {
            return Err(RegistryError::OperationNotPermitted(format!(
                "Subject {subject} is in read-only mode"
            )));
        }
        Ok(mode)
    }

    /// Plans `POST /subjects/{s}/versions`.
    pub fn plan_register(
        &self,
        subject: &str,
        req: &SchemaRequest,
        normalize: bool,
    ) -> Result<RegisterPlan, RegistryError> {
        check_subject(subject)?;
        let mode = self.check_writable(subject)?;
        match (req.id, mode) {
            (Some(_), m) if m != Mode::Import => {
                return Err(RegistryError::OperationNotPermitted(format!(
                    "Subject {subject} is not in import mode"
                )))
            }
            (None, Mode::Import) => {
                return Err(RegistryError::OperationNotPermitted(format!(
                    "Subject {subject} is not in read-write mode"
                )))
            }
            _ => {}
        }
        // A reference to "latest" (-1) is pinned to the version it means
        // now, so what the schema means never changes and the referenced
        // version is protected from deletion.
        let mut pinned = req.clone();
        for r in &mut pinned.references {
            if r.version == -1 {
                r.version = self
                    .version(&r.subject, VersionSpec::Latest, false)
                    .map_err(|_| {
                        RegistryError::InvalidSchema(format!(
                            "reference '{}' names the latest version of {}, which has none",
                            r.name, r.subject
                        ))
                    })?
                    .0;
            }
        }
        let req = &pinned;
        let parsed = self.parse(req, normalize)?;
        let sub = self.subjects.get(subject);
        // The same schema as a live version: nothing to do.
        if let Some(sub) = sub {
            for (n, v) in sub.live().rev() {
                if let Some(st) = self.schemas.get(&v.id) {
                    if self.same_schema(st, &parsed, req, normalize) {
                        if let Some(want) = req.id {
                            if want != v.id {
                                return Err(RegistryError::OperationNotPermitted(format!(
                                    "Schema already registered with id {} instead of input id {want}",
                                    v.id
                                )));
                            }
                        }
                        return Ok(RegisterPlan::Existing {
                            id: v.id,
                            version: *n,
                        });
                    }
                }
            }
        }
        let content = ContentKey {
            schema_type: req.schema_type,
            canonical: parsed.canonical.clone(),
            references: req.references.clone(),
        };
        let existing_id = self.by_content.get(&content).copied().or_else(|| {
            normalize
                .then(|| {
                    // The smallest matching id, so every registry picks the same.
                    self.schemas
                        .values()
                        .filter(|st| self.same_schema(st, &parsed, req, true))
                        .map(|st| st.id)
                        .min()
                })
                .flatten()
        });
        let id = match (req.id, existing_id) {
            (Some(want), Some(have)) if want != have => {
                return Err(RegistryError::OperationNotPermitted(format!(
                    "Schema already registered with id {have} instead of input id {want}"
                )))
            }
            (Some(want), _) => {
                if want < 1 {
                    return Err(RegistryError::BadRequest(format!(
                        "schema id must be positive, got {want}"
                    )));
                }
                if self.schemas.contains_key(&want) && existing_id != Some(want) {
                    return Err(RegistryError::OperationNotPermitted(format!(
                        "Overwrite new schema with id {want} is not permitted."
                    )));
                }
                want
            }
            (None, Some(have)) => have,
            (None, None) => self
                .max_id
                .checked_add(1)
                .ok_or_else(|| RegistryError::Store("every schema id has been used".to_string()))?,
        };
        // The stored text is the canonical text; when normalising, of an
        // existing schema reuse its text so the content keys agree.
        let canonical = match existing_id.and_then(|i| self.schemas.get(&i)) {
            Some(st) => st.canonical.clone(),
            None => parsed.canonical.clone(),
        };
        if mode != Mode::Import {
            let messages =
                self.compatibility_messages(subject, &parsed, self.compatibility(subject), None)?;
            if !messages.is_empty() {
                return Err(RegistryError::Incompatible {
                    subject: subject.to_string(),
                    messages,
                });
            }
        }
        let latest = sub
            .and_then(|s| s.versions.keys().next_back().copied())
            .unwrap_or(0);
        let next = latest.checked_add(1).ok_or_else(|| {
            RegistryError::InvalidVersion("the subject has no version numbers left".into())
        })?;
        let version = match req.version {
            None | Some(0) => next,
            Some(v) if v < 0 => return Err(RegistryError::InvalidVersion(v.to_string())),
            Some(v) if mode == Mode::Import => {
                if sub.is_some_and(|s| s.versions.contains_key(&v)) {
                    return Err(RegistryError::OperationNotPermitted(format!(
                        "Overwrite new schema with version {v} is not permitted."
                    )));
                }
                v
            }
            Some(v) if v == next => v,
            Some(_) => {
                return Err(RegistryError::InvalidSchema(
                    "Version is not one more than previous version".into(),
                ))
            }
        };
        let record = Record::Schema(
            subject.to_string(),
            version,
            Some(SchemaValue {
                subject: subject.to_string(),
                version,
                id,
                schema_type: req.schema_type,
                references: req.references.clone(),
                schema: canonical,
                deleted: false,
            }),
        );
        Ok(RegisterPlan::New {
            record,
            id,
            version,
        })
    }

    /// Whether a planned registration took effect.
    pub fn registered(&self, subject: &str, version: i32, id: i32) -> bool {
        self.subjects
            .get(subject)
            .and_then(|s| s.versions.get(&version))
            .is_some_and(|v| v.id == id)
    }

    /// Whether a planned registration record took effect: its subject
    /// version holds its id with its content (deleted or not since).
    pub fn took_effect(&self, record: &Record) -> bool {
        let Record::Schema(subject, version, Some(v)) = record else {
            return false;
        };
        self.registered(subject, *version, v.id)
            && self.schemas.get(&v.id).is_some_and(|st| {
                st.canonical == v.schema
                    && st.references == v.references
                    && st.schema_type == v.schema_type
            })
    }

    /// The record a writer whose registration lost appends for the same
    /// key, so that compaction drops its losing record: the key's current
    /// value, or, when the key holds nothing, a marker every reader
    /// ignores (id 0).
    pub fn supersede(&self, subject: &str, version: i32) -> Record {
        self.restate(subject, version).unwrap_or_else(|| {
            Record::Schema(
                subject.to_string(),
                version,
                Some(SchemaValue {
                    subject: subject.to_string(),
                    version,
                    id: 0,
                    schema_type: SchemaType::Avro,
                    references: Vec::new(),
                    schema: String::new(),
                    deleted: true,
                }),
            )
        })
    }

    /// The record that states the current value of a subject version
    /// (written again by a writer whose own record for the same key lost,
    /// so that compaction keeps the winner).
    pub fn restate(&self, subject: &str, version: i32) -> Option<Record> {
        let entry = self.subjects.get(subject)?.versions.get(&version)?;
        let stored = self.schemas.get(&entry.id)?;
        Some(Record::Schema(
            subject.to_string(),
            version,
            Some(SchemaValue {
                subject: subject.to_string(),
                version,
                id: entry.id,
                schema_type: stored.schema_type,
                references: stored.references.clone(),
                schema: stored.canonical.clone(),
                deleted: entry.deleted,
            }),
        ))
    }

    fn soft_delete_record(&self, subject: &str, version: i32) -> Option<Record> {
        let mut r = self.restate(subject, version)?;
        if let Record::Schema(_, _, Some(v)) = &mut r {
            v.deleted = true;
        }
        Some(r)
    }

    /// Records that keep ids from being reused when `removed` ids lose
    /// their last version.
    fn id_floor_after(&self, removing: &[(String, i32)]) -> Option<Record> {
        let gone: HashSet<&(String, i32)> = removing.iter().collect();
        let frees_an_id = removing.iter().any(|(s, v)| {
            self.subjects
                .get(s)
                .and_then(|sub| sub.versions.get(v))
                .and_then(|e| self.schemas.get(&e.id))
                .is_some_and(|st| st.versions.iter().all(|k| gone.contains(k)))
        });
        frees_an_id.then_some(Record::IdFloor(Some(IdFloorValue { id: self.max_id })))
    }

    /// A subject left without live versions loses its own config and
    /// mode, as in Confluent.
    fn forget_settings(&self, subject: &str) -> Vec<Record> {
        let mut records = Vec::new();
        if let Some(sub) = self.subjects.get(subject) {
            if sub.config.is_some() {
                records.push(Record::Config(Some(subject.to_string()), None));
            }
            if sub.mode.is_some() {
                records.push(Record::Mode(Some(subject.to_string()), None));
            }
        }
        records
    }

    fn check_not_referenced(&self, subject: &str, version: i32) -> Result<(), RegistryError> {
        if self.referenced_by(subject, version).is_empty() {
            Ok(())
        } else {
            Err(RegistryError::ReferenceExists(subject.to_string(), version))
        }
    }

    /// Plans `DELETE /subjects/{s}/versions/{v}`: the version deleted and
    /// the records to append.
    pub fn plan_delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<(i32, Vec<Record>), RegistryError> {
        self.check_writable(subject)?;
        // `latest` is the latest live version; a number may name a
        // soft-deleted one (to delete it permanently, or to say it is).
        let include_deleted = matches!(spec, VersionSpec::Number(_));
        let (n, entry, _) = self.version(subject, spec, include_deleted)?;
        if permanent {
            if !entry.deleted {
                return Err(RegistryError::VersionNotSoftDeleted(subject.to_string(), n));
            }
            self.check_not_referenced(subject, n)?;
            let removing = vec![(subject.to_string(), n)];
            // The floor goes first: if the delete stops half-way, no id is
            // freed without it.
            let mut records: Vec<Record> = self.id_floor_after(&removing).into_iter().collect();
            records.push(Record::Schema(subject.to_string(), n, None));
            return Ok((n, records));
        }
        if entry.deleted {
            return Err(RegistryError::VersionSoftDeleted(subject.to_string(), n));
        }
        self.check_not_referenced(subject, n)?;
        let mut records: Vec<Record> = self.soft_delete_record(subject, n).into_iter().collect();
        let last_live = self
            .subjects
            .get(subject)
            .is_some_and(|s| s.live().all(|(v, _)| *v == n));
        if last_live {
            records.extend(self.forget_settings(subject));
        }
        Ok((n, records))
    }

    /// Plans `DELETE /subjects/{s}`: the versions deleted and the records.
    pub fn plan_delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<(Vec<i32>, Vec<Record>), RegistryError> {
        self.check_writable(subject)?;
        let sub = self
            .subjects
            .get(subject)
            .filter(|s| !s.versions.is_empty())
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_string()))?;
        let versions: Vec<i32> = sub.versions.keys().copied().collect();
        if permanent {
            if sub.has_live() {
                return Err(RegistryError::SubjectNotSoftDeleted(subject.to_string()));
            }
            for v in &versions {
                self.check_not_referenced(subject, *v)?;
            }
            let removing: Vec<(String, i32)> =
                versions.iter().map(|v| (subject.to_string(), *v)).collect();
            // The floor goes first: if the delete stops half-way, no id is
            // freed without it.
            let mut records: Vec<Record> = self.id_floor_after(&removing).into_iter().collect();
            records.push(Record::ClearSubject(
                subject.to_string(),
                Some(ClearSubjectValue {
                    subject: subject.to_string(),
                }),
            ));
            records.extend(
                versions
                    .iter()
                    .map(|v| Record::Schema(subject.to_string(), *v, None)),
            );
            return Ok((versions, records));
        }
        if !sub.has_live() {
            return Err(RegistryError::SubjectSoftDeleted(subject.to_string()));
        }
        let live: Vec<i32> = sub.live().map(|(n, _)| *n).collect();
        for v in &live {
            self.check_not_referenced(subject, *v)?;
        }
        let latest = *versions.last().unwrap_or(&0);
        let mut records = vec![Record::DeleteSubject(
            subject.to_string(),
            Some(DeleteSubjectValue {
                subject: subject.to_string(),
                version: latest,
            }),
        )];
        records.extend(
            live.iter()
                .filter_map(|v| self.soft_delete_record(subject, *v)),
        );
        records.extend(self.forget_settings(subject));
        Ok((live, records))
    }

    /// Plans `PUT /config[/{s}]`.
    pub fn plan_set_config(
        &self,
        subject: Option<&str>,
        level: CompatibilityLevel,
    ) -> Result<Record, RegistryError> {
        if let Some(s) = subject {
            check_subject(s)?;
        }
        Ok(Record::Config(
            subject.map(str::to_string),
            Some(ConfigValue {
                compatibility_level: level,
            }),
        ))
    }

    /// Plans `DELETE /config[/{s}]`: the level that was in effect before.
    pub fn plan_delete_config(
        &self,
        subject: Option<&str>,
    ) -> Result<(CompatibilityLevel, Record), RegistryError> {
        let old = match subject {
            None => self.global_config(),
            Some(s) => self
                .subject_config(s)
                .ok_or_else(|| RegistryError::SubjectNotFound(s.to_string()))?,
        };
        Ok((old, Record::Config(subject.map(str::to_string), None)))
    }

    /// Plans `PUT /mode[/{s}]`.
    pub fn plan_set_mode(
        &self,
        subject: Option<&str>,
        mode: Mode,
        force: bool,
    ) -> Result<Record, RegistryError> {
        if let Some(s) = subject {
            check_subject(s)?;
        }
        if mode == Mode::Import && !force {
            let has_schemas = match subject {
                None => self.subjects.values().any(|s| !s.versions.is_empty()),
                Some(s) => self.subjects.get(s).is_some_and(|s| !s.versions.is_empty()),
            };
            if has_schemas {
                return Err(RegistryError::OperationNotPermitted(
                    "Cannot import since found existing subjects".to_string(),
                ));
            }
        }
        Ok(Record::Mode(
            subject.map(str::to_string),
            Some(ModeValue { mode }),
        ))
    }

    /// Plans `DELETE /mode[/{s}]`: the mode in effect before.
    pub fn plan_delete_mode(&self, subject: Option<&str>) -> Result<(Mode, Record), RegistryError> {
        let old = match subject {
            None => self.global_mode(),
            Some(s) => self
                .subject_mode(s)
                .ok_or_else(|| RegistryError::SubjectNotFound(s.to_string()))?,
        };
        Ok((old, Record::Mode(subject.map(str::to_string), None)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"}]}"#;
    const V2: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int","default":1}]}"#;
    const BAD: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"int"}]}"#;

    fn req(text: &str) -> SchemaRequest {
        SchemaRequest {
            schema: text.to_string(),
            ..Default::default()
        }
    }

    /// Plans and applies a registration, as a writer would.
    fn register(store: &mut Store, subject: &str, text: &str) -> Result<(i32, i32), RegistryError> {
        match store.plan_register(subject, &req(text), false)? {
            RegisterPlan::Existing { id, version } => Ok((id, version)),
            RegisterPlan::New {
                record,
                id,
                version,
            } => {
                assert_eq!(store.apply(record), Applied::Accepted);
                Ok((id, version))
            }
        }
    }

    fn apply_all(store: &mut Store, records: Vec<Record>) {
        for r in records {
            assert_eq!(store.apply(r), Applied::Accepted);
        }
    }

    #[test]
    fn registering_assigns_global_ids_and_per_subject_versions() {
        let mut s = Store::new();
        assert_eq!(register(&mut s, "a-value", V1).unwrap(), (1, 1));
        assert_eq!(register(&mut s, "a-value", V2).unwrap(), (2, 2));
        // The same schema under another subject keeps its id.
        assert_eq!(register(&mut s, "b-value", V1).unwrap(), (1, 1));
        // Registering again is a no-op answering the existing version.
        assert_eq!(
            s.plan_register("a-value", &req(V1), false).unwrap(),
            RegisterPlan::Existing { id: 1, version: 1 }
        );
        // Whitespace does not make a different schema.
        let spaced = V1.replace(',', " ,\n ");
        assert_eq!(
            s.plan_register("a-value", &req(&spaced), false).unwrap(),
            RegisterPlan::Existing { id: 1, version: 1 }
        );
        assert_eq!(
            s.id_versions(1, false),
            vec![("a-value".into(), 1), ("b-value".into(), 1)]
        );
        assert_eq!(s.subjects("", false, false), vec!["a-value", "b-value"]);
        assert_eq!(s.subjects("b", false, false), vec!["b-value"]);
    }

    #[test]
    fn an_incompatible_schema_is_refused_with_messages() {
        let mut s = Store::new();
        register(&mut s, "a", V1).unwrap();
        match register(&mut s, "a", BAD) {
            Err(RegistryError::Incompatible { messages, .. }) => {
                assert!(messages[0].contains("TYPE_MISMATCH"), "{messages:?}")
            }
            other => panic!("{other:?}"),
        }
        let rec = s
            .plan_set_config(Some("a"), CompatibilityLevel::None)
            .unwrap();
        s.apply(rec);
        assert_eq!(register(&mut s, "a", BAD).unwrap(), (2, 2));
    }

    #[test]
    fn defaults_make_a_different_schema() {
        let mut s = Store::new();
        register(&mut s, "a", V2).unwrap();
        let other_default = V2.replace("\"default\":1", "\"default\":5");
        assert_eq!(register(&mut s, "a", &other_default).unwrap(), (2, 2));
    }

    #[test]
    fn soft_delete_hides_versions_and_permanent_delete_needs_it_first() {
        let mut s = Store::new();
        register(&mut s, "a", V1).unwrap();
        register(&mut s, "a", V2).unwrap();
        assert_eq!(s.plan_delete_subject("a", true).unwrap_err().code(), 40405);
        let (versions, records) = s.plan_delete_subject("a", false).unwrap();
        assert_eq!(versions, vec![1, 2]);
        apply_all(&mut s, records);
        assert_eq!(s.subjects("", false, false), Vec::<String>::new());
        assert_eq!(s.subjects("", true, false), vec!["a"]);
        assert_eq!(s.subjects("", false, true), vec!["a"]);
        assert_eq!(s.versions("a", false, false).unwrap_err().code(), 40401);
        assert_eq!(s.versions("a", true, false).unwrap(), vec![1, 2]);
        assert_eq!(s.plan_delete_subject("a", false).unwrap_err().code(), 40404);
        // Soft-deleted schemas are still readable by id (old data decodes).
        assert!(s.schema_by_id(2).is_ok());
        let (versions, records) = s.plan_delete_subject("a", true).unwrap();
        assert_eq!(versions, vec![1, 2]);
        assert!(records
            .iter()
            .any(|r| matches!(r, Record::IdFloor(Some(IdFloorValue { id: 2 })))));
        apply_all(&mut s, records);
        assert_eq!(s.schema_by_id(2).unwrap_err().code(), 40403);
        assert_eq!(s.versions("a", true, false).unwrap_err().code(), 40401);
        // Ids are never reused, versions restart.
        assert_eq!(register(&mut s, "a", BAD).unwrap(), (3, 1));
    }

    #[test]
    fn the_id_floor_survives_compaction_of_deleted_schemas() {
        let mut s = Store::new();
        register(&mut s, "a", V1).unwrap();
        let (_, records) = s.plan_delete_subject("a", false).unwrap();
        apply_all(&mut s, records);
        let (_, records) = s.plan_delete_subject("a", true).unwrap();
        // After compaction only the latest record per key is left: the
        // tombstones expire, the floor stays.
        let floor: Vec<Record> = records
            .into_iter()
            .filter(|r| matches!(r, Record::IdFloor(_)))
            .collect();
        let mut fresh = Store::new();
        apply_all(&mut fresh, floor);
        assert_eq!(register(&mut fresh, "b", V2).unwrap(), (2, 1));
    }

    #[test]
    fn the_marker_a_losing_writer_leaves_changes_nothing() {
        let mut s = Store::new();
        register(&mut s, "a", V1).unwrap();
        let marker = s.supersede("c", 1);
        assert!(matches!(s.apply(marker), Applied::Rejected(_)));
        assert_eq!(s.subjects("", true, false), vec!["a"]);
        // Where the key holds a version, the record restates it.
        assert_eq!(Some(s.supersede("a", 1)), s.restate("a", 1));
    }

    #[test]
    fn a_reference_to_latest_is_pinned_to_its_version() {
        let mut s = Store::new();
        let address =
            r#"{"type":"record","name":"Address","fields":[{"name":"city","type":"string"}]}"#;
        register(&mut s, "address", address).unwrap();
        let mut r =
            req(r#"{"type":"record","name":"Order","fields":[{"name":"to","type":"Address"}]}"#);
        r.references = vec![SchemaReference {
            name: "Address".into(),
            subject: "address".into(),
            version: -1,
        }];
        let RegisterPlan::New { record, .. } = s.plan_register("order", &r, false).unwrap() else {
            panic!()
        };
        let Record::Schema(_, _, Some(v)) = &record else {
            panic!()
        };
        assert_eq!(v.references[0].version, 1);
        s.apply(record);
        assert_eq!(
            s.plan_delete_version("address", VersionSpec::Number(1), false)
                .unwrap_err()
                .code(),
            42206
        );
    }

    #[test]
    fn a_permanent_delete_writes_the_id_floor_before_the_tombstones() {
        let mut s = Store::new();
        register(&mut s, "a", V1).unwrap();
        let (_, records) = s
            .plan_delete_version("a", VersionSpec::Number(1), false)
            .unwrap();
        apply_all(&mut s, records);
        let (_, records) = s
            .plan_delete_version("a", VersionSpec::Number(1), true)
            .unwrap();
        assert!(
            matches!(records[0], Record::IdFloor(Some(IdFloorValue { id: 1 }))),
            "{records:?}"
        );
    }

    #[test]
    fn version_deletes_follow_confluents_rules() {
        let mut s = Store::new();
        register(&mut s, "a", V1).unwrap();
        register(&mut s, "a", V2).unwrap();
        assert_eq!(
            s.plan_delete_version("a", VersionSpec::Number(2), true)
                .unwrap_err()
                .code(),
            40407
        );
        let (n, records) = s
            .plan_delete_version("a", VersionSpec::Latest, false)
            .unwrap();
        assert_eq!(n, 2);
        apply_all(&mut s, records);
        assert_eq!(s.version("a", VersionSpec::Latest, false).unwrap().0, 1);
        assert_eq!(
            s.version("a", VersionSpec::Number(2), false)
                .unwrap_err()
                .code(),
            40402
        );
        assert!(
            s.version("a", VersionSpec::Number(2), true)
                .unwrap()
                .1
                .deleted
        );
        assert_eq!(
            s.plan_delete_version("a", VersionSpec::Number(2), false)
                .unwrap_err()
                .code(),
            40406
        );
        // Re-registering a soft-deleted schema makes a new version with its id.
        assert_eq!(register(&mut s, "a", V2).unwrap(), (2, 3));
        let (n, records) = s
            .plan_delete_version("a", VersionSpec::Number(2), true)
            .unwrap();
        assert_eq!(n, 2);
        apply_all(&mut s, records);
        assert_eq!(s.versions("a", true, false).unwrap(), vec![1, 3]);
        assert!(s.schema_by_id(2).is_ok(), "version 3 still uses id 2");
    }

    #[test]
    fn references_resolve_and_protect_what_they_reference() {
        let mut s = Store::new();
        let address = r#"{"type":"record","name":"Address","namespace":"acme","fields":[{"name":"city","type":"string"}]}"#;
        register(&mut s, "address", address).unwrap();
        let order = r#"{"type":"record","name":"Order","namespace":"acme","fields":[{"name":"to","type":"acme.Address"}]}"#;
        let mut r = req(order);
        assert_eq!(
            s.plan_register("order", &r, false).unwrap_err().code(),
            42201
        );
        r.references = vec![SchemaReference {
            name: "acme.Address".into(),
            subject: "address".into(),
            version: 1,
        }];
        let RegisterPlan::New { record, id, .. } = s.plan_register("order", &r, false).unwrap()
        else {
            panic!("expected a new registration")
        };
        s.apply(record);
        assert_eq!(s.referenced_by("address", 1), vec![id]);
        assert_eq!(
            s.plan_delete_version("address", VersionSpec::Number(1), false)
                .unwrap_err()
                .code(),
            42206
        );
        assert!(s.parsed(id).is_ok());
        // The same text with different references is a different schema.
        let mut r2 = r.clone();
        r2.references[0].name = "other".into();
        assert!(matches!(
            s.plan_register("order2", &r2, false).unwrap(),
            RegisterPlan::New { id: 3, .. }
        ));
    }

    #[test]
    fn conflicting_records_from_concurrent_writers_are_ignored_by_everyone() {
        // Two writers planned against the same state: both chose id 1
        // and version 1 of "a" for different schemas.
        let s = Store::new();
        let RegisterPlan::New { record: first, .. } =
            s.plan_register("a", &req(V1), false).unwrap()
        else {
            panic!()
        };
        let RegisterPlan::New { record: second, .. } =
            s.plan_register("a", &req(BAD), false).unwrap()
        else {
            panic!()
        };
        for order in [[&first, &second], [&first, &second]] {
            let mut reader = Store::new();
            assert_eq!(reader.apply(order[0].clone()), Applied::Accepted);
            assert!(matches!(
                reader.apply(order[1].clone()),
                Applied::Rejected(_)
            ));
            assert!(reader.registered("a", 1, 1));
            assert_eq!(
                reader.schema(1).unwrap().canonical,
                schema::parse(V1, &[], false).unwrap().canonical
            );
            // The loser restates the winner so that compaction keeps it.
            assert_eq!(reader.restate("a", 1), Some(first.clone()));
        }
        // The same schema under another id is refused too.
        let mut reader = Store::new();
        reader.apply(first.clone());
        let dup = Record::Schema(
            "b".into(),
            1,
            Some(SchemaValue {
                subject: "b".into(),
                version: 1,
                id: 2,
                schema_type: SchemaType::Avro,
                references: vec![],
                schema: reader.schema(1).unwrap().canonical.clone(),
                deleted: false,
            }),
        );
        assert!(matches!(reader.apply(dup), Applied::Rejected(_)));
    }

    #[test]
    fn modes_gate_writes_and_import_takes_given_ids() {
        let mut s = Store::new();
        let mut r = req(V1);
        r.id = Some(42);
        assert_eq!(s.plan_register("a", &r, false).unwrap_err().code(), 42205);
        let rec = s.plan_set_mode(None, Mode::Import, false).unwrap();
        s.apply(rec);
        let RegisterPlan::New {
            record,
            id,
            version,
        } = s.plan_register("a", &r, false).unwrap()
        else {
            panic!()
        };
        assert_eq!((id, version), (42, 1));
        s.apply(record);
        assert_eq!(
            s.plan_set_mode(None, Mode::Import, false)
                .unwrap_err()
                .code(),
            42205
        );
        let mut clash = req(V2);
        clash.id = Some(42);
        assert_eq!(
            s.plan_register("b", &clash, false).unwrap_err().code(),
            42205
        );
        let rec = s.plan_set_mode(Some("a"), Mode::Readonly, false).unwrap();
        s.apply(rec);
        assert_eq!(
            s.plan_register("a", &req(V2), false).unwrap_err().code(),
            42205
        );
        assert_eq!(s.plan_delete_subject("a", false).unwrap_err().code(), 42205);
        let (old, record) = s.plan_delete_mode(Some("a")).unwrap();
        assert_eq!(old, Mode::Readonly);
        s.apply(record);
        assert_eq!(s.mode("a"), Mode::Import);
        // New ids continue above imported ones.
        let rec = s.plan_set_mode(None, Mode::Readwrite, false).unwrap();
        s.apply(rec);
        assert!(matches!(
            s.plan_register("c", &req(V2), false).unwrap(),
            RegisterPlan::New { id: 43, .. }
        ));
    }

    #[test]
    fn configs_fall_back_from_subject_to_global_to_backward() {
        let mut s = Store::new();
        assert_eq!(s.compatibility("a"), CompatibilityLevel::Backward);
        let rec = s.plan_set_config(None, CompatibilityLevel::Full).unwrap();
        s.apply(rec);
        assert_eq!(s.compatibility("a"), CompatibilityLevel::Full);
        let rec = s
            .plan_set_config(Some("a"), CompatibilityLevel::None)
            .unwrap();
        s.apply(rec);
        assert_eq!(s.compatibility("a"), CompatibilityLevel::None);
        assert_eq!(s.plan_delete_config(Some("b")).unwrap_err().code(), 40401);
        let (old, r) = s.plan_delete_config(Some("a")).unwrap();
        assert_eq!(old, CompatibilityLevel::None);
        s.apply(r);
        assert_eq!(s.compatibility("a"), CompatibilityLevel::Full);
        let (_, r) = s.plan_delete_config(None).unwrap();
        s.apply(r);
        assert_eq!(s.compatibility("a"), CompatibilityLevel::Backward);
    }

    #[test]
    fn versions_parse_like_confluent() {
        assert_eq!(VersionSpec::parse("latest").unwrap(), VersionSpec::Latest);
        assert_eq!(VersionSpec::parse("-1").unwrap(), VersionSpec::Latest);
        assert_eq!(VersionSpec::parse("3").unwrap(), VersionSpec::Number(3));
        for bad in ["0", "-2", "x", "99999999999"] {
            assert_eq!(VersionSpec::parse(bad).unwrap_err().code(), 42202, "{bad}");
        }
    }

    #[test]
    fn normalize_finds_a_schema_spelled_differently() {
        let mut s = Store::new();
        let a = r#"{"type":"record","name":"Order","namespace":"acme","fields":[{"name":"id","type":"string"}]}"#;
        let b = r#"{"type":"record","name":"acme.Order","fields":[{"name":"id","type":"string"}]}"#;
        register(&mut s, "a", a).unwrap();
        assert!(s.lookup("a", &req(b), false, false).is_err());
        assert_eq!(s.lookup("a", &req(b), true, false).unwrap(), (1, 1));
        assert_eq!(
            s.plan_register("a", &req(b), true).unwrap(),
            RegisterPlan::Existing { id: 1, version: 1 }
        );
    }
}
