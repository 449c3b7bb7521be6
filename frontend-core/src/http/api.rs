//! The HTTP API's request parameters and response bodies: parsing and
//! validation of `GET /search` and `POST /search` into the query layer's
//! [`SearchParams`], and the JSON shapes of its
//! [`Answer`](crate::query::answer::Answer).
//!
//! Every bad input maps to an [`ApiError`] with a stable code; nothing here
//! panics on any input.

use serde::Deserialize;

use crate::http::error::{ApiError, ErrorCode};
pub use crate::http::response::{CoverageBody, HedgeBody, HitBody, SearchBody, ShardBody};
pub use crate::query::answer::SearchParams;

pub const DEFAULT_K: u32 = 10;
pub const MAX_K: u32 = scoring::MAX_K;
pub const DEFAULT_TIMEOUT_MS: u64 = 100;
pub const MAX_TIMEOUT_MS: u64 = 10_000;
pub const MAX_QUERY_BYTES: usize = 2048;

// The frontend never forwards a query a leaf would refuse for its length.
const _: () = assert!(MAX_QUERY_BYTES <= scoring::MAX_QUERY_BYTES);

/// The JSON body of `POST /search`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostBody {
    q: Option<String>,
    k: Option<serde_json::Value>,
    timeout_ms: Option<serde_json::Value>,
    allow_partial: Option<bool>,
    nocache: Option<bool>,
}

impl SearchParams {
    /// Parses a raw (still percent-encoded) query string.
    pub fn from_query_string(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut q = None;
        let mut k = None;
        let mut timeout = None;
        let mut allow_partial = None;
        let mut nocache = None;
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name)?;
            let value = decode(value)?;
            match name.as_str() {
                "q" => q = Some(value),
                "k" => k = Some(value),
                "timeout_ms" => timeout = Some(value),
                "allow_partial" => allow_partial = Some(parse_bool("allow_partial", &value)?),
                "nocache" => nocache = Some(parse_bool("nocache", &value)?),
                // Unknown parameters are ignored, as browsers and proxies
                // add their own (cache busters, tracking).
                _ => {}
            }
        }
        Self::validate(
            q,
            k.map(|v| parse_number("k", &v)).transpose()?,
            timeout
                .map(|v| parse_number("timeout_ms", &v))
                .transpose()?,
            allow_partial,
            nocache,
        )
    }

    /// Parses a JSON body.
    pub fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let body: PostBody = serde_json::from_slice(body).map_err(|error| {
            ApiError::bad_request(
                ErrorCode::MalformedJson,
                format!("malformed json body: {error}"),
            )
        })?;
        let number =
            |name: &str, value: Option<serde_json::Value>| -> Result<Option<i128>, ApiError> {
                match value {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(serde_json::Value::Number(n)) => match n.as_i64() {
                        Some(n) => Ok(Some(i128::from(n))),
                        None => Err(invalid_number(name)),
                    },
                    Some(serde_json::Value::String(s)) => parse_number(name, &s).map(Some),
                    Some(_) => Err(invalid_number(name)),
                }
            };
        Self::validate(
            body.q,
            number("k", body.k)?,
            number("timeout_ms", body.timeout_ms)?,
            body.allow_partial,
            body.nocache,
        )
    }

    fn validate(
        q: Option<String>,
        k: Option<i128>,
        timeout_ms: Option<i128>,
        allow_partial: Option<bool>,
        nocache: Option<bool>,
    ) -> Result<Self, ApiError> {
        let q = q.ok_or_else(|| {
            ApiError::bad_request(ErrorCode::MissingQuery, "parameter q is required")
        })?;
        if q.len() > MAX_QUERY_BYTES {
            return Err(ApiError::bad_request(
                ErrorCode::QueryTooLong,
                format!(
                    "q is {} bytes, at most {MAX_QUERY_BYTES} are allowed",
                    q.len()
                ),
            ));
        }
        if q.trim().is_empty() {
            return Err(ApiError::bad_request(
                ErrorCode::EmptyQuery,
                "q must not be empty",
            ));
        }
        let k = match k {
            None => DEFAULT_K,
            Some(k) if (1..=i128::from(MAX_K)).contains(&k) => k as u32,
            Some(k) => {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidK,
                    format!("k must be between 1 and {MAX_K}, got {k}"),
                ))
            }
        };
        let timeout_ms = match timeout_ms {
            None => DEFAULT_TIMEOUT_MS,
            Some(t) if (1..=i128::from(MAX_TIMEOUT_MS)).contains(&t) => t as u64,
            Some(t) => {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidTimeout,
                    format!("timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, got {t}"),
                ))
            }
        };
        Ok(SearchParams {
            q,
            k,
            timeout_ms,
            allow_partial: allow_partial.unwrap_or(true),
            nocache: nocache.unwrap_or(false),
        })
    }
}

fn invalid_number(name: &str) -> ApiError {
    let code = if name == "k" {
        ErrorCode::InvalidK
    } else {
        ErrorCode::InvalidTimeout
    };
    ApiError::bad_request(code, format!("{name} must be an integer"))
}

fn parse_number(name: &str, value: &str) -> Result<i128, ApiError> {
    value.trim().parse::<i128>().map_err(|_| {
        let code = if name == "k" {
            ErrorCode::InvalidK
        } else {
            ErrorCode::InvalidTimeout
        };
        ApiError::bad_request(code, format!("{name} must be an integer, got {value:?}"))
    })
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "" | "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(ApiError::bad_request(
            ErrorCode::InvalidParameter,
            format!("{name} must be true or false, got {value:?}"),
        )),
    }
}

/// Decodes one `application/x-www-form-urlencoded` component, refusing
/// malformed escapes and invalid UTF-8 instead of replacing them.
fn decode(component: &str) -> Result<String, ApiError> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            ErrorCode::InvalidEncoding,
                            "malformed percent-encoding in query string",
                        )
                    })?;
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| {
        ApiError::bad_request(ErrorCode::InvalidUtf8, "query string is not valid utf-8")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(result: Result<SearchParams, ApiError>) -> String {
        result.unwrap_err().code.to_string()
    }

    #[test]
    fn defaults_apply() {
        let p = SearchParams::from_query_string(Some("q=json+parser")).unwrap();
        assert_eq!(
            p,
            SearchParams {
                q: "json parser".into(),
                k: 10,
                timeout_ms: 100,
                allow_partial: true,
                nocache: false
            }
        );
    }

    #[test]
    fn every_bad_query_string_is_named() {
        let cases = [
            (None, "missing_query"),
            (Some("k=3"), "missing_query"),
            (Some("q="), "empty_query"),
            (Some("q=+++"), "empty_query"),
            (Some("q=a&k=0"), "invalid_k"),
            (Some("q=a&k=1001"), "invalid_k"),
            (Some("q=a&k=ten"), "invalid_k"),
            (
                Some("q=a&k=99999999999999999999999999999999999999999"),
                "invalid_k",
            ),
            (Some("q=a&timeout_ms=0"), "invalid_timeout"),
            (Some("q=a&timeout_ms=10001"), "invalid_timeout"),
            (Some("q=a&timeout_ms=-5"), "invalid_timeout"),
            (Some("q=%ff%fe"), "invalid_utf8"),
            (Some("q=%zz"), "invalid_encoding"),
            (Some("q=a%"), "invalid_encoding"),
            (Some("q=a&allow_partial=maybe"), "invalid_parameter"),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                code(SearchParams::from_query_string(raw)),
                expected,
                "{raw:?}"
            );
        }
        let long = format!("q={}", "a".repeat(MAX_QUERY_BYTES + 1));
        assert_eq!(
            code(SearchParams::from_query_string(Some(&long))),
            "query_too_long"
        );
    }

    #[test]
    fn json_bodies_parse_and_fail_clearly() {
        let p = SearchParams::from_json(
            br#"{"q":"http server","k":5,"timeout_ms":50,"allow_partial":false}"#,
        )
        .unwrap();
        assert_eq!((p.k, p.timeout_ms, p.allow_partial), (5, 50, false));
        assert_eq!(
            code(SearchParams::from_json(b"{not json")),
            "malformed_json"
        );
        assert_eq!(code(SearchParams::from_json(b"\xff\xfe")), "malformed_json");
        assert_eq!(
            code(SearchParams::from_json(br#"{"q":"a","k":"x"}"#)),
            "invalid_k"
        );
        assert_eq!(
            code(SearchParams::from_json(br#"{"q":"a","k":2.5}"#)),
            "invalid_k"
        );
        assert_eq!(
            code(SearchParams::from_json(br#"{"q":"a","timeout_ms":[]}"#)),
            "invalid_timeout"
        );
        assert_eq!(
            code(SearchParams::from_json(br#"{"k":3}"#)),
            "missing_query"
        );
        assert_eq!(
            code(SearchParams::from_json(br#"{"q":"a","bogus":1}"#)),
            "malformed_json"
        );
    }
}
