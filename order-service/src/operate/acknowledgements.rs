//! An operator's word that dead letters need nothing more done (`POST
//! /sagas/dead-letters/acknowledge`): for letters named one by one, or for every letter of
//! a cause. Recorded with the operator's subject and reason in order-service's database
//! (the dead letters themselves are never rewritten); acknowledged letters leave the
//! listing and stay listable with `?acknowledged=true`.

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_runtime::problem::kind;
use service_runtime::{Admin, FieldErrors, Problem, ValidJson};
use sqlx::PgPool;
use sqlx::types::Json as JsonColumn;
use utoipa::ToSchema;
use uuid::Uuid;

use super::OperateState;
use super::actions::checked_reason;
use super::causes::Cause;
use super::dead_letters::DeadLetterId;
use super::scan::ScannedLetter;
use crate::error::Error;

/// A dead letter's place: its dead-letter topic, partition and offset. A place never holds
/// another record.
pub type Place = (String, i32, i64);

/// Who acknowledged a letter, when, and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Acknowledgement {
    pub acknowledgement_id: Uuid,
    /// The operator: their token's subject.
    pub operator: String,
    pub reason: String,
    pub acknowledged_at: DateTime<Utc>,
    /// The cause acknowledged as a whole, when it was a group.
    pub cause: Option<Cause>,
}

/// Why, and which letters: those named, or every letter of a cause not acknowledged yet.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcknowledgeRequest {
    /// 1 to 500 characters.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
    /// The letters, as `GET /sagas/dead-letters` lists them. Either this or `cause`.
    pub dead_letters: Option<Vec<DeadLetterId>>,
    /// A group's cause, as `GET /sagas/dead-letters` lists it. Either this or
    /// `dead_letters`.
    pub cause: Option<Cause>,
}

/// What an acknowledgement covered.
#[derive(Debug, Serialize, ToSchema)]
pub struct Acknowledged {
    pub acknowledgement_id: Uuid,
    /// How many letters it acknowledged.
    pub acknowledged: usize,
}

/// Marks dead letters as handled: they leave the listing. For a cause, every letter of it
/// read now and not acknowledged before; letters of the cause that come later form the
/// group again.
#[utoipa::path(post, path = "/sagas/dead-letters/acknowledge", tag = "operate",
    security(("bearer" = ["admin"])),
    request_body = AcknowledgeRequest,
    responses(
        (status = 200, body = Acknowledged, description = "The letters are acknowledged"),
        (status = 400, description = "Malformed JSON", content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", content_type = "application/problem+json"),
        (status = 409, description = "Every letter named, or of the cause, was acknowledged before", content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", content_type = "application/problem+json"),
        (status = 415, description = "Body not sent as application/json", content_type = "application/problem+json"),
        (status = 422, description = "No reason, neither or both of `dead_letters` and `cause`, a letter that is not in a dead-letter topic, or a cause no letter has", content_type = "application/problem+json"),
        (status = 503, description = "The broker did not list the dead letters in time", content_type = "application/problem+json"),
    ))]
#[tracing::instrument(name = "acknowledge_dead_letters", skip_all)]
pub(super) async fn acknowledge(
    Admin(operator): Admin,
    State(state): State<OperateState>,
    ValidJson(request): ValidJson<AcknowledgeRequest>,
) -> Result<Json<Acknowledged>, Problem> {
    let reason = checked_reason(&request.reason)?;
    let scan = state.complete_dead_letter_scan().await?;
    let places = match (&request.dead_letters, &request.cause) {
        (Some(named), None) => named_places(scan.letters(), named)?,
        (None, Some(cause)) => places_of(scan.letters(), cause)?,
        _ => {
            return Err(Problem::invalid_field(
                "dead_letters",
                "name either the dead letters or a cause, not both",
            ));
        }
    };
    let id = Uuid::now_v7();
    let recorded = record(
        &state.pool,
        id,
        operator.subject(),
        &reason,
        request.cause.as_ref(),
        &places,
    )
    .await?;
    if recorded == 0 {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            kind::ALREADY_ACKNOWLEDGED,
            "Already acknowledged",
        )
        .detail("every one of these dead letters was acknowledged before"));
    }
    tracing::info!(operator = operator.subject(), reason, acknowledged = recorded, cause = ?request.cause, "operator acknowledged dead letters");
    Ok(Json(Acknowledged {
        acknowledgement_id: id,
        acknowledged: recorded,
    }))
}

/// The places of the `named` letters: 422 for one the scan did not find.
fn named_places(letters: &[ScannedLetter], named: &[DeadLetterId]) -> Result<Vec<Place>, Problem> {
    let mut errors = FieldErrors::default();
    errors.check(
        !named.is_empty() && named.len() <= 1000,
        "dead_letters",
        "name 1 to 1000 dead letters",
    );
    let scanned: HashSet<(&str, i32, i64)> = letters
        .iter()
        .map(|s| (s.dlq.as_str(), s.letter.partition, s.letter.offset))
        .collect();
    let mut places = Vec::new();
    for id in named {
        let found = scanned.contains(&(id.topic.as_str(), id.partition, id.offset));
        errors.check(
            found,
            "dead_letters",
            format!(
                "{} [{}] @{} is not a dead letter",
                id.topic, id.partition, id.offset
            ),
        );
        places.push((id.topic.clone(), id.partition, id.offset));
    }
    errors.into_result()?;
    Ok(places)
}

/// The places of every letter of `cause`: 422 if it has none.
fn places_of(letters: &[ScannedLetter], cause: &Cause) -> Result<Vec<Place>, Problem> {
    let places: Vec<Place> = letters
        .iter()
        .filter(|scanned| scanned.cause() == *cause)
        .map(ScannedLetter::place)
        .collect();
    if places.is_empty() {
        return Err(Problem::invalid_field(
            "cause",
            "no dead letter has this cause",
        ));
    }
    Ok(places)
}

/// Records the acknowledgement of the `places` not acknowledged before, in one transaction;
/// returns how many it covered (when none, nothing is recorded).
async fn record(
    pool: &PgPool,
    id: Uuid,
    operator: &str,
    reason: &str,
    cause: Option<&Cause>,
    places: &[Place],
) -> Result<usize, Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "INSERT INTO dead_letter_acknowledgements (acknowledgement_id, operator, reason, cause)
         VALUES ($1, $2, $3, $4)",
        id,
        operator,
        reason,
        cause.map(JsonColumn) as Option<JsonColumn<&Cause>>,
    )
    .execute(&mut *tx)
    .await?;
    let (topics, partitions, offsets) = columns(places);
    let covered = sqlx::query!(
        r#"INSERT INTO acknowledged_dead_letters
               (dead_letter_topic, partition, "offset", acknowledgement_id)
           SELECT topic, partition, "offset", $4
           FROM UNNEST($1::text[], $2::int4[], $3::int8[]) AS p (topic, partition, "offset")
           ON CONFLICT DO NOTHING"#,
        &topics,
        &partitions,
        &offsets,
        id,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if covered > 0 {
        tx.commit().await?;
    }
    Ok(covered as usize)
}

/// The acknowledgements of those of `places` that were acknowledged.
pub(super) async fn of(
    pool: &PgPool,
    places: &[Place],
) -> Result<HashMap<Place, Acknowledgement>, Error> {
    let (topics, partitions, offsets) = columns(places);
    let rows = sqlx::query!(
        r#"SELECT l.dead_letter_topic, l.partition, l."offset", a.acknowledgement_id,
                  a.operator, a.reason, a.acknowledged_at,
                  a.cause AS "cause: JsonColumn<Cause>"
           FROM acknowledged_dead_letters l
           JOIN dead_letter_acknowledgements a USING (acknowledgement_id)
           WHERE (l.dead_letter_topic, l.partition, l."offset") IN
                 (SELECT * FROM UNNEST($1::text[], $2::int4[], $3::int8[]))"#,
        &topics,
        &partitions,
        &offsets,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let acknowledgement = Acknowledgement {
                acknowledgement_id: row.acknowledgement_id,
                operator: row.operator,
                reason: row.reason,
                acknowledged_at: row.acknowledged_at,
                cause: row.cause.map(|cause| cause.0),
            };
            (
                (row.dead_letter_topic, row.partition, row.offset),
                acknowledgement,
            )
        })
        .collect())
}

fn columns(places: &[Place]) -> (Vec<String>, Vec<i32>, Vec<i64>) {
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    for (topic, partition, offset) in places {
        columns.0.push(topic.clone());
        columns.1.push(*partition);
        columns.2.push(*offset);
    }
    columns
}
