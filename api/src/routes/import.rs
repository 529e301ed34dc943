//! Streaming CSV import: the body is parsed incrementally (csv-core) as it arrives and written
//! in batches, so a million rows never sit in memory. The header row must have an `address`
//! column; other columns become template variables. Bad rows are reported with their line and
//! skipped; good rows import. A fatal error mid-stream (body too large, a row over 1 MiB) stops
//! the import; rows committed before it stay, and the error says how many
//! (`imported_before_error`).

use crate::error::{ApiError, ApiResult};
use crate::{validate, AppState};
use axum::body::Bytes;
use csv_core::{ReadRecordResult, Reader};
use futures::{Stream, StreamExt};
use serde::Serialize;
use storage::{Audience, Lease, NewRecipient};

const BATCH: usize = 5_000;
const MAX_ERRORS: usize = 100;
const MAX_ROW_BYTES: usize = 1 << 20;
const MAX_COLUMNS: usize = 1024;

/// What a CSV import did.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    pub imported: u64,
    pub rejected: u64,
    /// Addresses already in the audience (or repeated in the file): skipped.
    pub duplicates: u64,
    /// The first 100 rejected rows, with their line in the file (1 = header).
    pub errors: Vec<RowError>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RowError {
    pub line: u64,
    pub reason: String,
}

struct Parser {
    reader: Reader,
    output: Vec<u8>,
    ends: Vec<usize>,
    out_len: usize,
    ends_len: usize,
    /// Line on which the next record starts if it starts now (1 = header).
    line: u64,
    /// Between records: newlines seen now are blank lines, which move `line`.
    boundary: bool,
    /// Newlines inside the current record (quoted newlines and its terminator).
    newlines: u64,
}

impl Parser {
    fn new() -> Self {
        Self {
            reader: Reader::new(),
            output: vec![0; 4096],
            ends: vec![0; 64],
            out_len: 0,
            ends_len: 0,
            line: 1,
            boundary: true,
            newlines: 0,
        }
    }

    /// Counts lines in bytes the reader consumed.
    fn count(&mut self, consumed: &[u8]) {
        for &b in consumed {
            match (self.boundary, b) {
                (true, b'\n') => self.line += 1,
                (true, b'\r') => {}
                (true, _) => self.boundary = false,
                (false, b'\n') => self.newlines += 1,
                (false, _) => {}
            }
        }
    }

    /// Feeds bytes (empty = end of input) and appends every completed record to `rows`.
    fn feed(&mut self, mut input: &[u8], rows: &mut Vec<(u64, Vec<String>)>) -> ApiResult<()> {
        let end = input.is_empty();
        loop {
            let (result, read, written, ends) =
                self.reader.read_record(input, &mut self.output[self.out_len..], &mut self.ends[self.ends_len..]);
            self.count(&input[..read]);
            input = &input[read..];
            self.out_len += written;
            self.ends_len += ends;
            match result {
                ReadRecordResult::InputEmpty if !end => return Ok(()),
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    if self.output.len() >= MAX_ROW_BYTES {
                        return Err(ApiError::unprocessable(
                            "row_too_large",
                            format!("line {}: row over 1 MiB", self.line),
                        ));
                    }
                    self.output.resize(self.output.len() * 2, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    if self.ends.len() >= MAX_COLUMNS {
                        return Err(ApiError::unprocessable(
                            "too_many_columns",
                            format!("line {}: over {MAX_COLUMNS} columns", self.line),
                        ));
                    }
                    self.ends.resize(self.ends.len() * 2, 0);
                }
                ReadRecordResult::Record => {
                    let mut fields = Vec::with_capacity(self.ends_len);
                    let mut start = 0;
                    for &stop in &self.ends[..self.ends_len] {
                        fields.push(String::from_utf8_lossy(&self.output[start..stop]).into_owned());
                        start = stop;
                    }
                    rows.push((self.line, fields));
                    // A record spans its quoted newlines and its terminator.
                    self.line += self.newlines;
                    self.newlines = 0;
                    self.boundary = true;
                    self.out_len = 0;
                    self.ends_len = 0;
                }
                ReadRecordResult::End => return Ok(()),
            }
        }
    }
}

/// How long an import's lease lasts without renewal (renewed at every batch it writes).
const IMPORT_LEASE_MS: u64 = 120_000;

/// The right to add recipients to one audience: one writer at a time across every API process,
/// because recipient ids are dense per audience (`Audiences::add_recipients`).
pub(crate) struct ImportLease {
    lease: Lease,
}

impl ImportLease {
    /// Takes the audience's lease, or 409 `import_in_progress`.
    pub async fn take(state: &AppState, audience: &Audience) -> ApiResult<Self> {
        let name = format!("import/{}/{}", audience.tenant, audience.id);
        let holder = format!("api-{}-{:016x}", std::process::id(), rand::random::<u64>());
        Self::acquire(state, &name, &holder).await.map(|lease| Self { lease })
    }

    async fn acquire(state: &AppState, name: &str, holder: &str) -> ApiResult<Lease> {
        state.state.acquire_lease(name, holder, IMPORT_LEASE_MS, schemas::now_ms()).await?.ok_or_else(|| {
            ApiError::conflict(
                "import_in_progress",
                "another import into this audience is running; try again when it ends",
            )
        })
    }

    /// Renews the lease before a write (a lease lost meanwhile stops the import).
    pub async fn renew(&mut self, state: &AppState) -> ApiResult<()> {
        let (name, holder) = (self.lease.name.clone(), self.lease.holder.clone());
        self.lease = Self::acquire(state, &name, &holder).await?;
        Ok(())
    }

    pub async fn release(self, state: &AppState) {
        if let Err(e) = state.state.release_lease(&self.lease).await {
            tracing::warn!(lease = %self.lease.name, error = %e, "import lease not released; it expires on its own");
        }
    }
}

/// Imports a CSV body stream into `audience` (under its import lease).
pub async fn csv<S, E>(state: &AppState, audience: &Audience, body: S) -> ApiResult<ImportReport>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut lease = ImportLease::take(state, audience).await?;
    let report = import(state, audience, body, &mut lease).await;
    lease.release(state).await;
    report
}

async fn import<S, E>(
    state: &AppState,
    audience: &Audience,
    mut body: S,
    lease: &mut ImportLease,
) -> ApiResult<ImportReport>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut parser = Parser::new();
    let mut report = ImportReport::default();
    let mut header: Option<Vec<String>> = None;
    let mut address_column = 0;
    let mut pending: Vec<NewRecipient> = Vec::with_capacity(BATCH);
    let mut rows = Vec::new();
    let mut finished = false;
    while !finished {
        // A fatal error says how many rows were committed before it.
        let fatal = |e: ApiError, report: &ImportReport| e.with("imported_before_error", report.imported);
        let chunk = match body.next().await {
            Some(Ok(bytes)) if bytes.is_empty() => continue,
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) => {
                let message = e.to_string();
                let error = if message.contains("length limit") {
                    ApiError::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
                } else {
                    ApiError::bad_request("body_read_failed", message)
                };
                return Err(fatal(error, &report));
            }
            None => {
                finished = true;
                Bytes::new()
            }
        };
        parser.feed(&chunk, &mut rows).map_err(|e| fatal(e, &report))?;
        for (line, fields) in rows.drain(..) {
            let Some(columns) = &header else {
                let columns: Vec<String> =
                    fields.iter().map(|f| f.trim().trim_start_matches('\u{feff}').to_string()).collect();
                address_column = columns.iter().position(|c| c == "address").ok_or_else(|| {
                    ApiError::unprocessable("missing_address_column", "the header row needs an \"address\" column")
                })?;
                header = Some(columns);
                continue;
            };
            if fields.len() == 1 && fields[0].trim().is_empty() {
                continue; // blank line
            }
            let oversized = columns
                .iter()
                .zip(&fields)
                .enumerate()
                .filter(|(i, _)| *i != address_column)
                .find_map(|(_, (k, v))| validate::attribute(k, v).err());
            let row = if fields.len() != columns.len() {
                Err(format!("expected {} columns, found {}", columns.len(), fields.len()))
            } else if let Some(reason) = oversized {
                Err(reason)
            } else {
                validate::address(&fields[address_column]).map(|address| NewRecipient {
                    address,
                    attrs: columns
                        .iter()
                        .zip(fields)
                        .enumerate()
                        .filter(|(i, _)| *i != address_column)
                        .map(|(_, (k, v))| (k.clone(), v))
                        .collect(),
                })
            };
            match row {
                Ok(r) => pending.push(r),
                Err(reason) => {
                    report.rejected += 1;
                    if report.errors.len() < MAX_ERRORS {
                        report.errors.push(RowError { line, reason });
                    }
                }
            }
        }
        if pending.len() >= BATCH || (finished && !pending.is_empty()) {
            lease.renew(state).await.map_err(|e| e.with("imported_before_error", report.imported))?;
            let added = state.store.add_recipients(audience.tenant, audience.id, std::mem::take(&mut pending)).await?;
            report.imported += added.added;
            report.duplicates += added.duplicates;
        }
    }
    if header.is_none() {
        return Err(ApiError::unprocessable("empty_csv", "the body has no header row"));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&str]) -> Vec<(u64, Vec<String>)> {
        let mut parser = Parser::new();
        let mut rows = Vec::new();
        for c in chunks {
            parser.feed(c.as_bytes(), &mut rows).unwrap();
        }
        parser.feed(&[], &mut rows).unwrap();
        rows
    }

    #[test]
    fn records_split_across_chunks_and_quoted_newlines_keep_line_numbers() {
        let rows = parse(&["address,name\n+1202555", "0143,Al\n\"+12025550144\",\"multi\nline\"\n+1202", "5550145,Bo"]);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1], (2, vec!["+12025550143".to_string(), "Al".to_string()]));
        assert_eq!(rows[2].0, 3);
        assert_eq!(rows[2].1[1], "multi\nline");
        assert_eq!(rows[3], (5, vec!["+12025550145".to_string(), "Bo".to_string()]));
    }

    #[test]
    fn blank_lines_and_crlf_keep_line_numbers() {
        let rows = parse(&["address\r\n\r\n\n+12025550143\r\n\n", "\n+12025550144\n\"a\nb\"\n+1202555", "0145"]);
        let lines: Vec<u64> = rows.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, vec![1, 4, 7, 8, 10], "{rows:?}");
    }
}
