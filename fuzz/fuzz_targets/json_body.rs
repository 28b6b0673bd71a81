//! The strict JSON body reader: it accepts nothing `serde_json` rejects, reads the same members
//! with the same values, and refuses every document that repeats a member at any depth.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use tessera::support::strict_json::{ObjectError, parse_object};

/// Walks a document with serde_json and says whether some object repeats a member.
struct Repeats<'a>(&'a mut bool);

impl<'de> DeserializeSeed<'de> for Repeats<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Repeats<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                *self.0 = true;
            }
            map.next_value_seed(Repeats(self.0))?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Repeats(self.0))?.is_some() {}
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let ours = parse_object(data, 4);
    let theirs = serde_json::from_slice::<serde_json::Value>(data);
    let mut repeats = false;
    let mut document = serde_json::Deserializer::from_slice(data);
    // The whole input: a value followed by anything but whitespace is not a document.
    let walked = Repeats(&mut repeats)
        .deserialize(&mut document)
        .and_then(|()| document.end());
    if repeats {
        assert!(ours.is_err(), "a repeated member was accepted: {ours:?}");
    }
    if walked.is_ok() && repeats {
        // A well-formed document whose only fault is the repeat is refused for it (or for
        // nesting deeper than the body reader allows).
        assert!(
            matches!(
                ours,
                Err(ObjectError::DuplicateMember(_)
                    | ObjectError::TooDeep(_)
                    | ObjectError::NotAnObject)
            ),
            "{ours:?}"
        );
    }
    let Ok(members) = ours else {
        return;
    };
    assert!(walked.is_ok() && !repeats);
    let serde_json::Value::Object(object) = theirs.expect("serde_json accepts what we accept")
    else {
        panic!("we accepted something other than an object");
    };
    assert_eq!(members.len(), object.len());
    for (name, value) in &members {
        assert_eq!(object.get(name), Some(value), "{name}");
    }
});
