//! Avro schema resolution of a decoded value onto this code's reader schema, honouring the
//! reader's field aliases (apache-avro's `Value::resolve` matches field names only).

use apache_avro::Schema;
use apache_avro::schema::{NamesRef, ResolvedSchema};
use apache_avro::types::Value;

/// Resolves `value`, decoded with the writer's schema, onto `reader`: renamed fields are found
/// through the reader's aliases, fields the reader added take their defaults, fields the
/// reader dropped are ignored.
pub fn resolve_onto_reader(value: Value, reader: &Schema) -> Result<Value, apache_avro::Error> {
    let resolved = ResolvedSchema::try_from(reader)?;
    let renamed = rename_aliased_fields(value, reader, resolved.get_names());
    renamed.resolve(reader)
}

fn rename_aliased_fields(value: Value, schema: &Schema, names: &NamesRef<'_>) -> Value {
    match (value, schema) {
        (value, Schema::Ref { name }) => match names.get(name) {
            Some(named) => rename_aliased_fields(value, named, names),
            None => value,
        },
        (Value::Record(mut fields), Schema::Record(record)) => {
            for field in &record.fields {
                let present = fields.iter().any(|(name, _)| *name == field.name);
                if !present
                    && let Some(slot) = fields
                        .iter_mut()
                        .find(|(name, _)| field.aliases.contains(name))
                {
                    slot.0 = field.name.clone();
                }
            }
            let fields = fields
                .into_iter()
                .map(
                    |(name, value)| match record.fields.iter().find(|f| f.name == name) {
                        Some(field) => {
                            let value = rename_aliased_fields(value, &field.schema, names);
                            (name, value)
                        }
                        None => (name, value),
                    },
                )
                .collect();
            Value::Record(fields)
        }
        (Value::Array(items), Schema::Array(array)) => Value::Array(
            items
                .into_iter()
                .map(|item| rename_aliased_fields(item, &array.items, names))
                .collect(),
        ),
        (Value::Union(index, inner), Schema::Union(union)) => {
            // A nested record in a union: rename against the first reader record variant.
            let inner = match union
                .variants()
                .iter()
                .find(|v| matches!(v, Schema::Record(_) | Schema::Ref { .. }))
            {
                Some(variant) if matches!(*inner, Value::Record(_)) => {
                    rename_aliased_fields(*inner, variant, names)
                }
                _ => *inner,
            };
            Value::Union(index, Box::new(inner))
        }
        (value, _) => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(json: &str) -> Schema {
        Schema::parse_str(json).unwrap()
    }

    #[test]
    fn a_field_renamed_through_an_alias_is_found_under_its_new_name() {
        let reader = schema(
            r#"{"type":"record","name":"R","fields":[
                {"name":"delivery_instructions","type":["null","string"],"default":null,"aliases":["customer_note"]},
                {"name":"gift_wrap","type":"boolean","default":false}]}"#,
        );
        let written = Value::Record(vec![(
            "customer_note".into(),
            Value::Union(1, Box::new(Value::String("ring twice".into()))),
        )]);

        let resolved = resolve_onto_reader(written, &reader).unwrap();

        assert_eq!(
            resolved,
            Value::Record(vec![
                (
                    "delivery_instructions".into(),
                    Value::Union(1, Box::new(Value::String("ring twice".into())))
                ),
                ("gift_wrap".into(), Value::Boolean(false)),
            ])
        );
    }

    #[test]
    fn aliases_apply_inside_arrays_of_named_records() {
        let reader = schema(
            r#"{"type":"record","name":"R","fields":[
                {"name":"a","type":{"type":"record","name":"Line","fields":[{"name":"qty","type":"int","aliases":["quantity"]}]}},
                {"name":"lines","type":{"type":"array","items":"Line"}}]}"#,
        );
        let line = |n| Value::Record(vec![("quantity".into(), Value::Int(n))]);
        let written = Value::Record(vec![
            ("a".into(), line(1)),
            ("lines".into(), Value::Array(vec![line(2), line(3)])),
        ]);

        let resolved = resolve_onto_reader(written, &reader).unwrap();

        let qty = |n| Value::Record(vec![("qty".into(), Value::Int(n))]);
        assert_eq!(
            resolved,
            Value::Record(vec![
                ("a".into(), qty(1)),
                ("lines".into(), Value::Array(vec![qty(2), qty(3)])),
            ])
        );
    }
}
