//! Strict parsing of a JSON object into its members, in order and with duplicates kept.
//!
//! `serde_json::Map` silently keeps the last of two members with the same name. RFC 8259 §4 leaves
//! duplicates' meaning undefined and RFC 7515 §5.2 tells JWS parsers to reject them or use a
//! parser that does, so both the token codec and the HTTP body parser go through here and refuse
//! them. Nesting is bounded *before* serde recurses, so a hostile `[[[[…]]]]` costs one linear scan.

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

/// One member of a JSON object: its name and value, in document order.
pub type Member = (String, Value);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("not valid UTF-8")]
    InvalidUtf8,
    #[error("starts with a byte order mark")]
    ByteOrderMark,
    #[error("not a JSON object")]
    NotAnObject,
    #[error("malformed JSON")]
    Malformed,
    #[error("nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("member `{0}` appears more than once")]
    DuplicateMember(String),
}

/// Parses `bytes` as exactly one JSON object whose values nest at most `max_depth` levels
/// (the object itself is level 1). Members come back in document order.
pub fn parse_object(bytes: &[u8], max_depth: usize) -> Result<Vec<Member>, ObjectError> {
    let text = precheck(bytes, max_depth)?;

    let mut deserializer = serde_json::Deserializer::from_str(text);
    let nested_repeat = RefCell::new(None);
    let members = MembersSeed(&nested_repeat)
        .deserialize(&mut deserializer)
        .map_err(|_| match nested_repeat.take() {
            Some(name) => ObjectError::DuplicateMember(name),
            None => ObjectError::Malformed,
        })?;
    deserializer.end().map_err(|_| ObjectError::Malformed)?;

    let mut seen = HashSet::with_capacity(members.len());
    for (name, _) in &members {
        if !seen.insert(name.as_str()) {
            return Err(ObjectError::DuplicateMember(name.clone()));
        }
    }
    Ok(members)
}

/// The checks every strict parse starts with: UTF-8, no byte order mark, an object, bounded
/// nesting. Returns the text for the parser proper.
pub fn precheck(bytes: &[u8], max_depth: usize) -> Result<&str, ObjectError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ObjectError::InvalidUtf8)?;
    if text.starts_with('\u{feff}') {
        return Err(ObjectError::ByteOrderMark);
    }
    if !text.trim_start().starts_with('{') {
        return Err(ObjectError::NotAnObject);
    }
    check_depth(text.as_bytes(), max_depth)?;
    Ok(text)
}

/// Counts bracket depth outside strings. Malformed input is left for serde to reject.
fn check_depth(bytes: &[u8], max_depth: usize) -> Result<(), ObjectError> {
    // Depth can never exceed the number of opening brackets, and counting them is a branch-free
    // loop the compiler vectorises; only documents with more brackets than the limit (never a
    // token of ours) pay for the exact scan.
    let openers = bytes
        .iter()
        .fold(0usize, |n, &b| n + usize::from(b == b'{' || b == b'['));
    if openers <= max_depth {
        return Ok(());
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in bytes {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(ObjectError::TooDeep(max_depth));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Where a nested object's repeated member is named when the parse stops on it.
type RepeatedName<'a> = &'a RefCell<Option<String>>;

struct MembersSeed<'a>(RepeatedName<'a>);

impl<'de> DeserializeSeed<'de> for MembersSeed<'_> {
    type Value = Vec<Member>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(MembersVisitor(self.0))
    }
}

struct MembersVisitor<'a>(RepeatedName<'a>);

impl<'de> Visitor<'de> for MembersVisitor<'_> {
    type Value = Vec<Member>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value_seed(ValueSeed(self.0))?;
            members.push((name, value));
        }
        Ok(members)
    }
}

/// A member's value, whose objects at any depth repeat no member: the parse stops at the first
/// repeat and names it (top-level repeats are found after the parse, with their name).
struct ValueSeed<'a>(RepeatedName<'a>);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor(self.0))
    }
}

struct ValueVisitor<'a>(RepeatedName<'a>);

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ValueSeed(self.0))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if object.contains_key(&name) {
                let error = A::Error::custom(format_args!("member `{name}` appears twice"));
                *self.0.borrow_mut() = Some(name);
                return Err(error);
            }
            let value = map.next_value_seed(ValueSeed(self.0))?;
            object.insert(name, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_come_back_in_document_order() {
        let members = parse_object(br#"{"b":1,"a":"x"}"#, 2).unwrap();
        let names: Vec<_> = members.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
    }

    #[test]
    fn duplicate_members_are_rejected() {
        assert_eq!(
            parse_object(br#"{"a":1,"a":2}"#, 2),
            Err(ObjectError::DuplicateMember("a".into()))
        );
    }

    /// Found by the `json_body` fuzz target: a repeat inside a nested object was kept, last one
    /// winning. A repeat at any depth is refused and named.
    #[test]
    fn duplicate_members_of_nested_objects_are_rejected() {
        assert_eq!(
            parse_object(br#"{"x":{"a":1,"a":2}}"#, 4),
            Err(ObjectError::DuplicateMember("a".into()))
        );
        assert_eq!(
            parse_object(br#"{"x":[1,{"b":{},"b":[]}]}"#, 4),
            Err(ObjectError::DuplicateMember("b".into()))
        );
        let fine = parse_object(br#"{"x":{"a":1,"b":[{"a":2}]},"y":-1.5e3}"#, 4).unwrap();
        let expected: Value = serde_json::from_str(r#"{"a":1,"b":[{"a":2}]}"#).unwrap();
        assert_eq!(fine[0].1, expected);
        assert_eq!(fine[1].1, serde_json::json!(-1.5e3));
    }

    #[test]
    fn deep_nesting_is_rejected_before_parsing() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            parse_object(deep.as_bytes(), 4),
            Err(ObjectError::TooDeep(4))
        );
    }

    #[test]
    fn brackets_inside_strings_do_not_count_as_nesting() {
        assert!(parse_object(br#"{"a":"[[[[[[[[\"{{{{"}"#, 1).is_ok());
    }

    #[test]
    fn non_objects_bom_bad_utf8_and_trailing_garbage_are_rejected() {
        assert_eq!(parse_object(b"[1]", 4), Err(ObjectError::NotAnObject));
        assert_eq!(parse_object(b"null", 4), Err(ObjectError::NotAnObject));
        assert_eq!(
            parse_object("\u{feff}{}".as_bytes(), 4),
            Err(ObjectError::ByteOrderMark)
        );
        assert_eq!(
            parse_object(b"{\"a\":\"\xff\"}", 4),
            Err(ObjectError::InvalidUtf8)
        );
        assert_eq!(parse_object(b"{} {}", 4), Err(ObjectError::Malformed));
        assert_eq!(parse_object(b"{\"a\":}", 4), Err(ObjectError::Malformed));
    }
}
