//! What a writer schema may be before a record is decoded with it. apache-avro bounds each
//! collection's allocation, not a whole record's: items that take no bytes on the wire
//! (`null`, an empty record, a zero-sized `fixed`) let an 808-byte record claim 200 arrays
//! of 50,000 items each, half a gigabyte once decoded. With every array and map item taking
//! at least one byte, and records at most [`MAX_RECORD_BYTES`], what a record decodes to is
//! bounded by its size; a bounded, non-recursive nesting bounds the decoder's stack.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::InnerDecimalSchema;

/// The largest record value decoded at all: our largest event is a few KB (an order's lines
/// are bounded), so anything near this is not ours.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// The deepest nesting of records, arrays, maps and unions a writer schema may have (our
/// contracts nest 4 deep).
pub const MAX_SCHEMA_DEPTH: usize = 16;

/// Why a record must not be decoded with `schema`, if it must not.
pub fn unsafe_schema(schema: &Schema) -> Option<String> {
    Guard::default().check(schema, 0).err()
}

#[derive(Default)]
struct Guard<'s> {
    /// Named types seen so far, by full name: a `Ref` names one of them.
    named: HashMap<String, &'s Schema>,
    /// The records being walked, innermost last: a `Ref` to one of them is recursion.
    enclosing: Vec<String>,
}

impl<'s> Guard<'s> {
    fn check(&mut self, schema: &'s Schema, depth: usize) -> Result<(), String> {
        if depth > MAX_SCHEMA_DEPTH {
            return Err(format!("it nests deeper than {MAX_SCHEMA_DEPTH} levels"));
        }
        match schema {
            Schema::Array(array) => {
                self.check(&array.items, depth + 1)?;
                self.no_empty_items(&array.items, "an array")
            }
            Schema::Map(map) => {
                self.check(&map.types, depth + 1)?;
                self.no_empty_items(&map.types, "a map")
            }
            Schema::Union(union) => union
                .variants()
                .iter()
                .try_for_each(|variant| self.check(variant, depth + 1)),
            Schema::Record(record) => {
                let name = record.name.fullname(None);
                self.named.insert(name.clone(), schema);
                self.enclosing.push(name);
                for field in &record.fields {
                    self.check(&field.schema, depth + 1)?;
                }
                self.enclosing.pop();
                Ok(())
            }
            Schema::Enum(e) => {
                self.named.insert(e.name.fullname(None), schema);
                Ok(())
            }
            Schema::Fixed(fixed) | Schema::Duration(fixed) => {
                self.named.insert(fixed.name.fullname(None), schema);
                Ok(())
            }
            Schema::Ref { name } => {
                let name = name.fullname(None);
                if self.enclosing.contains(&name) {
                    return Err(format!("it is recursive ({name} contains itself)"));
                }
                match self.named.get(&name) {
                    Some(_) => Ok(()),
                    None => Err(format!("it names an undefined type {name}")),
                }
            }
            _ => Ok(()),
        }
    }

    /// Refuses collection items that take no bytes on the wire.
    fn no_empty_items(&self, items: &Schema, collection: &str) -> Result<(), String> {
        if self.takes_no_bytes(items) {
            Err(format!(
                "{collection} of items that take no bytes could claim any number of them"
            ))
        } else {
            Ok(())
        }
    }

    fn takes_no_bytes(&self, schema: &Schema) -> bool {
        match schema {
            Schema::Null => true,
            Schema::Fixed(fixed) => fixed.size == 0,
            Schema::Decimal(decimal) => {
                matches!(&decimal.inner, InnerDecimalSchema::Fixed(fixed) if fixed.size == 0)
            }
            Schema::Record(record) => record.fields.iter().all(|f| self.takes_no_bytes(&f.schema)),
            Schema::Ref { name } => self
                .named
                .get(&name.fullname(None))
                .is_some_and(|named| self.takes_no_bytes(named)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::CONTRACTS;

    fn verdict(json: &str) -> Option<String> {
        unsafe_schema(&Schema::parse_str(json).unwrap())
    }

    #[test]
    fn every_contract_schema_is_safe() {
        for contract in CONTRACTS {
            let schema = Schema::parse_str(contract.schema_json).unwrap();
            assert_eq!(unsafe_schema(&schema), None, "{}", contract.event_type);
        }
    }

    #[test]
    fn arrays_and_maps_of_items_that_take_no_bytes_are_refused() {
        for items in [
            r#""null""#,
            r#"{"type":"array","items":"null"}"#,
            r#"{"type":"record","name":"Empty","fields":[]}"#,
            r#"{"type":"fixed","name":"Zero","size":0}"#,
        ] {
            let array = format!(
                r#"{{"type":"record","name":"orderflow.events.OrderPlaced","fields":[
                    {{"name":"bomb","type":{{"type":"array","items":{items}}}}}]}}"#
            );
            let map = array.replace(r#""type":"array","items""#, r#""type":"map","values""#);
            for schema in [array, map] {
                let why = verdict(&schema).unwrap_or_else(|| panic!("accepted {schema}"));
                assert!(why.contains("take no bytes"), "{why}");
            }
        }
        // An array of arrays is fine: each inner array takes at least its end marker.
        assert_eq!(
            verdict(
                r#"{"type":"record","name":"R","fields":[
                    {"name":"a","type":{"type":"array","items":{"type":"array","items":"int"}}}]}"#
            ),
            None
        );
    }

    #[test]
    fn recursive_and_deep_schemas_are_refused() {
        let recursive = r#"{"type":"record","name":"Node","fields":[
            {"name":"next","type":["null","Node"]}]}"#;
        assert!(verdict(recursive).unwrap().contains("recursive"));

        let mut deep = r#""int""#.to_owned();
        for _ in 0..MAX_SCHEMA_DEPTH {
            deep = format!(r#"{{"type":"array","items":{deep}}}"#);
        }
        let deep =
            format!(r#"{{"type":"record","name":"R","fields":[{{"name":"d","type":{deep}}}]}}"#);
        assert!(verdict(&deep).unwrap().contains("deeper"));
    }
}
