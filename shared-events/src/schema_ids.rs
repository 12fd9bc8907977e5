//! Which contract a schema id is registered for, asked of the registry before anything of
//! the schema is read (`GET /schemas/ids/{id}/versions`: the id must be under the subject of
//! a contract, `<topic>-<record>`), and whether its writer schema is safe to decode with
//! ([`unsafe_schema`]). Both answers are remembered, for a bounded number of ids.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use apache_avro::Schema;

use crate::codec::{
    DecodeError, RegistryConfig, SCHEMA_NOT_FOUND, UNKNOWN_ID_RECHECK, subject_name,
};
use crate::contracts::{CONTRACTS, Contract};
use crate::error::Error;
use crate::schema_guard::unsafe_schema;
use crate::topics::TopicNames;

/// How many schema ids the codec remembers, accepted or refused: a flood of records naming
/// new ids must not grow its memory without end.
pub const REMEMBERED_IDS: usize = 1024;

pub(crate) struct SchemaIds {
    subjects: SubjectLookup,
    /// The topic names of this deployment: a contract's subject names its topic.
    names: TopicNames,
    /// What the registry said of each schema id, and when. An id under a contract's subject
    /// is believed for good; any other answer (never issued, or under no contract's
    /// subject) only for [`UNKNOWN_ID_RECHECK`]: records naming such ids are dead-lettered
    /// without asking again meanwhile, so a flood of poison costs the registry little and a
    /// late registration is still seen. At most [`REMEMBERED_IDS`] entries.
    ids: Mutex<HashMap<u32, (Instant, IdLookup)>>,
    /// Why each accepted id's writer schema must not be decoded with, if it must not, judged
    /// once per id. At most [`REMEMBERED_IDS`] entries.
    verdicts: Mutex<HashMap<u32, Option<String>>>,
}

impl SchemaIds {
    pub(crate) fn new(config: &RegistryConfig, names: &TopicNames) -> Result<Self, Error> {
        Ok(Self {
            subjects: SubjectLookup {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| Error::Timeout(format!("an HTTP client: {e}")))?,
                url: config.url.clone(),
                username: config.username.clone(),
                password: config.password.clone(),
            },
            names: names.clone(),
            ids: Mutex::new(HashMap::new()),
            verdicts: Mutex::new(HashMap::new()),
        })
    }

    /// The contract under whose subject the registry lists schema `id`, if it travels on
    /// `topic` (any topic when `None`).
    pub(crate) async fn contract_of(
        &self,
        id: u32,
        topic: Option<&str>,
    ) -> Result<&'static Contract, DecodeError> {
        if let Some(decided) = self.remembered(id, topic) {
            return decided;
        }
        let lookup = match self.subjects.of(id).await? {
            Answer::NeverIssued(reason) => IdLookup::NeverIssued(reason),
            Answer::Subjects(subjects) => {
                let registered = CONTRACTS
                    .iter()
                    .filter(|c| subjects.contains(&subject_name(&self.names, c)))
                    .collect();
                IdLookup::Subjects {
                    subjects,
                    registered,
                }
            }
        };
        let decided = self.decide(id, &lookup, topic);
        self.remember(id, lookup);
        decided
    }

    /// What `lookup` says of a record of schema `id` read from `topic`.
    fn decide(
        &self,
        id: u32,
        lookup: &IdLookup,
        topic: Option<&str>,
    ) -> Result<&'static Contract, DecodeError> {
        let (subjects, registered) = match lookup {
            IdLookup::NeverIssued(reason) => {
                let reason = reason.clone();
                return Err(DecodeError::UnknownSchemaId { id, reason });
            }
            IdLookup::Subjects {
                subjects,
                registered,
            } => (subjects, registered),
        };
        let on_topic = |c: &&&Contract| topic.is_none_or(|t| self.names.parse(t) == Some(c.topic));
        if let Some(contract) = registered.iter().find(on_topic) {
            return Ok(contract);
        }
        Err(match registered.first() {
            Some(contract) => DecodeError::NotThisTopicsContract {
                id,
                event_type: contract.event_type,
                topic: topic.unwrap_or_default().to_owned(),
            },
            None => DecodeError::NotAContractSubject {
                id,
                topic: topic.map(str::to_owned),
                subjects: subjects.clone(),
            },
        })
    }

    /// How many schema ids it remembers an answer for.
    pub(crate) fn len(&self) -> usize {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Why schema `id` (`writer`) must not be decoded with, if it must not; judged once.
    pub(crate) fn verdict(&self, id: u32, writer: &Schema) -> Option<String> {
        let mut verdicts = self.verdicts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(verdict) = verdicts.get(&id) {
            return verdict.clone();
        }
        let verdict = unsafe_schema(writer);
        if verdicts.len() < REMEMBERED_IDS {
            verdicts.insert(id, verdict.clone());
        }
        verdict
    }

    /// What the registry's remembered answer about `id` decides, if it is still believed.
    fn remembered(
        &self,
        id: u32,
        topic: Option<&str>,
    ) -> Option<Result<&'static Contract, DecodeError>> {
        let ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let (at, lookup) = ids.get(&id)?;
        (lookup.for_good() || at.elapsed() < UNKNOWN_ID_RECHECK)
            .then(|| self.decide(id, lookup, topic))
    }

    fn remember(&self, id: u32, lookup: IdLookup) {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.len() >= REMEMBERED_IDS {
            ids.retain(|_, (at, lookup)| lookup.for_good() || at.elapsed() < UNKNOWN_ID_RECHECK);
        }
        if ids.len() >= REMEMBERED_IDS {
            // Still full of fresh refusals (a flood): forget the oldest one.
            let oldest = ids
                .iter()
                .filter(|(_, (_, lookup))| !lookup.for_good())
                .min_by_key(|(_, (at, _))| *at)
                .map(|(id, _)| *id);
            match oldest {
                Some(oldest) => drop(ids.remove(&oldest)),
                // Full of accepted ids: someone registers schemas under our subjects in a
                // loop; this one is asked about again next time.
                None => return,
            }
        }
        ids.insert(id, (Instant::now(), lookup));
    }
}

/// What the registry said of a schema id.
enum Answer {
    /// The subjects it is registered under.
    Subjects(Vec<String>),
    /// It was never issued: the registry's message.
    NeverIssued(String),
}

/// The registry's answer about a schema id, with the contracts whose subjects list it.
enum IdLookup {
    Subjects {
        subjects: Vec<String>,
        registered: Vec<&'static Contract>,
    },
    NeverIssued(String),
}

impl IdLookup {
    /// Whether it is believed for good: the id is under a contract's subject.
    fn for_good(&self) -> bool {
        matches!(self, IdLookup::Subjects { registered, .. } if !registered.is_empty())
    }
}

/// `GET /schemas/ids/{id}/versions` on the registry.
struct SubjectLookup {
    client: reqwest::Client,
    url: String,
    username: Option<String>,
    password: Option<crate::credentials::Secret>,
}

impl SubjectLookup {
    async fn of(&self, id: u32) -> Result<Answer, DecodeError> {
        let url = format!(
            "{}/schemas/ids/{id}/versions",
            self.url.trim_end_matches('/')
        );
        let mut request = self.client.get(url);
        if let Some(username) = &self.username {
            request = request.basic_auth(username, self.password.as_ref().map(|p| p.expose()));
        }
        let unavailable =
            |e: &dyn std::fmt::Display| DecodeError::RegistryUnavailable(e.to_string());
        let response = request.send().await.map_err(|e| unavailable(&e))?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| unavailable(&format!("{status}, {e}")))?;
        if status.is_success() {
            let subjects = body
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|version| version["subject"].as_str().map(str::to_owned))
                .collect();
            return Ok(Answer::Subjects(subjects));
        }
        // Only the registry's own "schema not found" says the id was never issued; anything
        // else (a 5xx, a 404 from a proxy while the registry restarts) may pass: retried.
        if body["error_code"] == SCHEMA_NOT_FOUND {
            let message = body["message"].as_str().unwrap_or("schema not found");
            return Ok(Answer::NeverIssued(message.to_owned()));
        }
        Err(unavailable(&format!("{status}: {body}")))
    }
}
