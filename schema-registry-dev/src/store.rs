//! The registry's state: schemas by id, subjects with their versions, compatibility levels.
//! Persisted as one JSON file, rewritten atomically after every change, so ids survive a
//! restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use serde::{Deserialize, Serialize};

use crate::error::RegistryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubjectVersion {
    pub version: u32,
    pub id: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// Schema text by id (index = id - 1), as first registered.
    schemas: Vec<String>,
    subjects: BTreeMap<String, Vec<SubjectVersion>>,
    global_compatibility: Compatibility,
    subject_compatibility: BTreeMap<String, Compatibility>,
}

pub struct Store {
    state: State,
    path: Option<PathBuf>,
}

/// A version of a subject, as the REST API shows it.
pub struct Registered {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

impl Store {
    /// Loads the registry from `path` (a missing file is an empty registry); `None` keeps it
    /// in memory only.
    pub fn open(path: Option<&Path>) -> Result<Self, RegistryError> {
        let state = match path {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(path).map_err(RegistryError::storage)?;
                serde_json::from_str(&text).map_err(RegistryError::storage)?
            }
            _ => State {
                schemas: Vec::new(),
                subjects: BTreeMap::new(),
                global_compatibility: Compatibility::Backward,
                subject_compatibility: BTreeMap::new(),
            },
        };
        Ok(Self {
            state,
            path: path.map(Path::to_path_buf),
        })
    }

    pub fn subjects(&self) -> Vec<String> {
        self.state.subjects.keys().cloned().collect()
    }

    pub fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        Ok(self.subject(subject)?.iter().map(|v| v.version).collect())
    }

    pub fn schema_by_id(&self, id: u32) -> Result<&str, RegistryError> {
        id.checked_sub(1)
            .and_then(|i| self.state.schemas.get(i as usize))
            .map(String::as_str)
            .ok_or(RegistryError::SchemaNotFound)
    }

    /// Every subject and version registered with schema `id` (Confluent's
    /// `GET /schemas/ids/{id}/versions`).
    pub fn subject_versions_of(&self, id: u32) -> Result<Vec<(String, u32)>, RegistryError> {
        self.schema_by_id(id)?;
        Ok(self
            .state
            .subjects
            .iter()
            .flat_map(|(subject, versions)| {
                versions
                    .iter()
                    .filter(|v| v.id == id)
                    .map(|v| (subject.clone(), v.version))
            })
            .collect())
    }

    /// `version` is a number or `latest`.
    pub fn version(&self, subject: &str, version: &str) -> Result<Registered, RegistryError> {
        let versions = self.subject(subject)?;
        let found = if version == "latest" || version == "-1" {
            versions.last()
        } else {
            let wanted: u32 = version
                .parse()
                .map_err(|_| RegistryError::InvalidVersion(version.to_owned()))?;
            versions.iter().find(|v| v.version == wanted)
        };
        let found = found.ok_or(RegistryError::VersionNotFound)?;
        self.registered(subject, found)
    }

    /// The version of `subject` holding exactly `schema`.
    pub fn lookup(&self, subject: &str, schema: &str) -> Result<Registered, RegistryError> {
        parse(schema)?;
        let key = normalize(schema)?;
        let versions = self.subject(subject)?;
        let found = versions
            .iter()
            .find(|v| {
                self.schema_by_id(v.id)
                    .ok()
                    .and_then(|s| normalize(s).ok())
                    .as_deref()
                    == Some(key.as_str())
            })
            .ok_or(RegistryError::SchemaNotFound)?;
        self.registered(subject, found)
    }

    /// Registers `schema` under `subject`; the same schema text always gets the same id,
    /// and registering a subject's existing schema again returns its id.
    pub fn register(&mut self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let parsed = parse(schema)?;
        let key = normalize(schema)?;
        if let Ok(existing) = self.lookup(subject, schema) {
            return Ok(existing.id);
        }
        let level = self.compatibility(subject);
        let previous = self
            .state
            .subjects
            .get(subject)
            .cloned()
            .unwrap_or_default();
        if let Err(reason) = self.check(level, &parsed, &previous) {
            return Err(RegistryError::Incompatible(reason));
        }
        let id = match self
            .state
            .schemas
            .iter()
            .position(|s| normalize(s).ok().as_deref() == Some(key.as_str()))
        {
            Some(index) => index as u32 + 1,
            None => {
                self.state.schemas.push(schema.to_owned());
                self.state.schemas.len() as u32
            }
        };
        let versions = self.state.subjects.entry(subject.to_owned()).or_default();
        let version = versions.last().map_or(1, |v| v.version + 1);
        versions.push(SubjectVersion { version, id });
        self.save()?;
        Ok(id)
    }

    /// Whether `schema` could be registered under `subject`, judged against `version` (or all
    /// versions for a transitive level).
    pub fn is_compatible(
        &self,
        subject: &str,
        version: &str,
        schema: &str,
    ) -> Result<bool, RegistryError> {
        let parsed = parse(schema)?;
        let level = self.compatibility(subject);
        let versions = self.subject(subject)?;
        let against: Vec<SubjectVersion> = if is_transitive(level) {
            versions.to_vec()
        } else {
            let chosen = self.version(subject, version)?;
            vec![SubjectVersion {
                version: chosen.version,
                id: chosen.id,
            }]
        };
        Ok(self.check(level, &parsed, &against).is_ok())
    }

    pub fn compatibility(&self, subject: &str) -> Compatibility {
        self.state
            .subject_compatibility
            .get(subject)
            .copied()
            .unwrap_or(self.state.global_compatibility)
    }

    pub fn subject_compatibility(&self, subject: &str) -> Option<Compatibility> {
        self.state.subject_compatibility.get(subject).copied()
    }

    pub fn global_compatibility(&self) -> Compatibility {
        self.state.global_compatibility
    }

    pub fn set_global_compatibility(&mut self, level: Compatibility) -> Result<(), RegistryError> {
        self.state.global_compatibility = level;
        self.save()
    }

    pub fn set_subject_compatibility(
        &mut self,
        subject: &str,
        level: Compatibility,
    ) -> Result<(), RegistryError> {
        self.state
            .subject_compatibility
            .insert(subject.to_owned(), level);
        self.save()
    }

    fn subject(&self, subject: &str) -> Result<&[SubjectVersion], RegistryError> {
        self.state
            .subjects
            .get(subject)
            .map(Vec::as_slice)
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))
    }

    fn registered(
        &self,
        subject: &str,
        version: &SubjectVersion,
    ) -> Result<Registered, RegistryError> {
        Ok(Registered {
            subject: subject.to_owned(),
            version: version.version,
            id: version.id,
            schema: self.schema_by_id(version.id)?.to_owned(),
        })
    }

    /// Checks `new` against the subject's existing versions with real Avro schema resolution.
    fn check(
        &self,
        level: Compatibility,
        new: &Schema,
        existing: &[SubjectVersion],
    ) -> Result<(), String> {
        let against: &[SubjectVersion] = if is_transitive(level) {
            existing
        } else {
            existing
                .last()
                .map(std::slice::from_ref)
                .unwrap_or_default()
        };
        for version in against {
            let text = self.schema_by_id(version.id).map_err(|e| e.to_string())?;
            let old = parse(text).map_err(|e| e.to_string())?;
            let backward = || {
                SchemaCompatibility::can_read(&old, new)
                    .map(drop)
                    .map_err(|e| {
                        format!(
                            "new schema cannot read data written with version {}: {e}",
                            version.version
                        )
                    })
            };
            let forward = || {
                SchemaCompatibility::can_read(new, &old)
                    .map(drop)
                    .map_err(|e| {
                        format!(
                            "version {} cannot read data written with the new schema: {e}",
                            version.version
                        )
                    })
            };
            match level {
                Compatibility::None => {}
                Compatibility::Backward | Compatibility::BackwardTransitive => backward()?,
                Compatibility::Forward | Compatibility::ForwardTransitive => forward()?,
                Compatibility::Full | Compatibility::FullTransitive => {
                    backward()?;
                    forward()?;
                }
            }
        }
        Ok(())
    }

    fn save(&self) -> Result<(), RegistryError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(&self.state).map_err(RegistryError::storage)?;
        std::fs::write(&tmp, text).map_err(RegistryError::storage)?;
        std::fs::rename(&tmp, path).map_err(RegistryError::storage)
    }
}

fn is_transitive(level: Compatibility) -> bool {
    matches!(
        level,
        Compatibility::BackwardTransitive
            | Compatibility::ForwardTransitive
            | Compatibility::FullTransitive
    )
}

fn parse(schema: &str) -> Result<Schema, RegistryError> {
    Schema::parse_str(schema).map_err(|e| RegistryError::InvalidSchema(e.to_string()))
}

/// Compact JSON with sorted keys: the same schema written with other whitespace or key order
/// is the same schema.
fn normalize(schema: &str) -> Result<String, RegistryError> {
    let value: serde_json::Value =
        serde_json::from_str(schema).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
    Ok(value.to_string())
}
