//! JSON request bodies: the one place the API reads them, so every route answers a body it
//! cannot use the same way.
//!
//! * **Content type.** A body that parses as JSON is read whatever its `Content-Type` says
//!   (`curl -d` sends `application/x-www-form-urlencoded`); one that does not gets
//!   "expected a JSON body (Content-Type: application/json)", as `415` when the request
//!   named another type, `400` otherwise.
//! * **Key names.** snake_case is the API's documented convention and what it answers in;
//!   kebab-case (the configuration file's names) is accepted too. Keys are rewritten to the
//!   form the target type reads, at every level except inside free-form maps (conversion
//!   `metadata`, a plan's `flat_minor` event names), whose keys are the caller's data.
//! * **Numbers.** serde_json keeps each number's literal text (the `arbitrary_precision`
//!   feature), so an amount sent as a JSON number is read from that text exactly like the
//!   string form: no binary floating point touches money; `49.9` is 4990 cents and `1e2`
//!   (kept as `1e+2`) is refused. Ids sent as integers are their decimal text.

// The error is the ready answer, as in the API handlers.
#![allow(clippy::result_large_err)]

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::BTreeMap;

/// The key style a target type reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// `order_id` (conversions, postbacks, keys, the API's own bodies).
    Snake,
    /// `merchant-id` (entities, which share their serde names with the configuration).
    Kebab,
}

/// Object keys whose values are maps of the caller's own keys, never rewritten.
const FREE_FORM: &[&str] = &["metadata", "flat_minor", "flat-minor"];

/// Parses `body` as JSON into `T`, accepting either key style (see the module docs).
/// `what` names the thing in errors ("conversion", "postback").
pub fn parse<T: DeserializeOwned>(
    req: &HttpRequest,
    body: &[u8],
    keys: Keys,
    what: &str,
) -> Result<T, HttpResponse> {
    let mut value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Err(not_json(req, body, what, &e)),
    };
    rewrite_keys(&mut value, keys);
    serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            bad(format!("bad {what}: {inner}"))
        } else {
            bad(format!("bad {what}: {path}: {inner}"))
        }
    })
}

fn bad(msg: String) -> HttpResponse {
    crate::api::error(StatusCode::BAD_REQUEST, msg)
}

fn not_json(req: &HttpRequest, body: &[u8], what: &str, e: &serde_json::Error) -> HttpResponse {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json_type = mime == "application/json" || mime.ends_with("+json");
    let expected = "expected a JSON body (Content-Type: application/json)";
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return bad(format!("{expected}; the body is empty"));
    }
    if !ct.is_empty() && !json_type {
        return crate::api::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("{expected}, not {ct}"),
        );
    }
    let form_like = body.contains(&b'=') && !body.starts_with(b"{");
    if form_like {
        return bad(format!("{expected}; this looks form-encoded"));
    }
    bad(format!("{expected}; bad {what}: {e}"))
}

/// Rewrites object keys to `keys`' style, except inside the free-form maps.
fn rewrite_keys(v: &mut Value, keys: Keys) {
    match v {
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut val) in old {
                let free = FREE_FORM.contains(&k.as_str());
                let k = match keys {
                    Keys::Snake => k.replace('-', "_"),
                    Keys::Kebab => k.replace('_', "-"),
                };
                if !free {
                    rewrite_keys(&mut val, keys);
                }
                map.insert(k, val);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rewrite_keys(i, keys)),
        _ => {}
    }
}

/// Rewrites an answer's object keys from kebab-case to snake_case (entities are stored
/// with their configuration names), except inside the free-form maps.
pub fn snake_keys(mut v: Value) -> Value {
    rewrite_keys(&mut v, Keys::Snake);
    v
}

/// A string, or a JSON number taken as its literal text (`49.9` -> `"49.9"`, `1e2` ->
/// `"1e2"`, which amount parsing then refuses by name).
pub fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a string or a number, not {other}"
        ))),
    }
}

/// An id: a string, or a whole JSON number as its decimal text (`12345` -> `"12345"`).
pub fn id_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string or a whole number, not {other}"
        ))),
    }
}

/// [`id_text`] for an optional id.
pub fn opt_id_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    struct Id(#[serde(deserialize_with = "id_text")] String);
    Ok(Option::<Id>::deserialize(d)?.map(|i| i.0))
}

/// Metadata: a map whose values are strings, or numbers and booleans as their text.
pub fn metadata_text<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    let Some(map) = Option::<BTreeMap<String, Value>>::deserialize(d)? else {
        return Ok(None);
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            Value::Number(n) => Ok((k, n.to_string())),
            Value::Bool(b) => Ok((k, b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "metadata {k:?}: expected a string, number or boolean, not {other}"
            ))),
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Conv {
        #[serde(deserialize_with = "id_text")]
        order_id: String,
        #[serde(default, deserialize_with = "text_or_number")]
        amount: Option<String>,
        #[serde(default, deserialize_with = "metadata_text")]
        metadata: Option<BTreeMap<String, String>>,
    }

    fn conv(body: &str) -> Result<Conv, String> {
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .to_http_request();
        parse::<Conv>(&req, body.as_bytes(), Keys::Snake, "conversion")
            .map_err(|r| format!("{}", r.status()))
    }

    #[test]
    fn numbers_keep_their_literal_text() {
        let c = conv(r#"{"order-id": 12345, "amount": 49.90, "metadata": {"a-b": 7, "c": true}}"#)
            .unwrap();
        assert_eq!(c.order_id, "12345");
        assert_eq!(c.amount.as_deref(), Some("49.90"));
        let m = c.metadata.unwrap();
        assert_eq!((m["a-b"].as_str(), m["c"].as_str()), ("7", "true"));
        // Exponents stay exponents (serde_json writes `1e+2`), which amounts refuse.
        let e = conv(r#"{"order_id":"x","amount":1e2}"#)
            .unwrap()
            .amount
            .unwrap();
        assert!(e.contains('e'), "{e}");
        assert!(conv(r#"{"order_id": 1.5}"#).is_err());
        assert!(conv(r#"{"order_id": "x", "amount": [1]}"#).is_err());
    }

    #[test]
    fn keys_rewrite_except_in_free_form_maps() {
        let mut v =
            json!({"merchant_id": "m", "flat_minor": {"sign_up": 1}, "tiers": {"up_to": 1}});
        rewrite_keys(&mut v, Keys::Kebab);
        assert_eq!(
            v,
            json!({"merchant-id": "m", "flat-minor": {"sign_up": 1}, "tiers": {"up-to": 1}})
        );
        assert_eq!(
            snake_keys(json!({"flat-minor": {"a-b": 1}, "deep-link-hosts": ["x-y"]})),
            json!({"flat_minor": {"a-b": 1}, "deep_link_hosts": ["x-y"]})
        );
    }

    #[test]
    fn a_body_that_is_not_json_says_what_was_expected() {
        let form = actix_web::test::TestRequest::default()
            .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
            .to_http_request();
        let r =
            parse::<Conv>(&form, b"order_id=1&amount=2", Keys::Snake, "conversion").unwrap_err();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        // JSON sent as curl -d sends it is read.
        assert!(parse::<Conv>(&form, br#"{"order_id":"1"}"#, Keys::Snake, "c").is_ok());
        let none = actix_web::test::TestRequest::default().to_http_request();
        let r = parse::<Conv>(&none, b"order_id=1", Keys::Snake, "conversion").unwrap_err();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
}
