//! A package's settings schema (`settings.schema.json`): checked to be a JSON Schema when
//! a package is packed, inspected or installed, and used to validate the settings an
//! operator gives a plugin before they are stored.

use serde_json::Value;

use crate::PackageError;

/// A compiled JSON Schema for a package's settings.
pub struct SettingsSchema {
    schema: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for SettingsSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettingsSchema")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// Where a value breaks its schema, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingsViolation {
    /// The JSON pointer of the offending value (`/threshold`; empty for the whole value).
    pub path: String,
    /// What is wrong with it.
    pub why: String,
}

impl std::fmt::Display for SettingsViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.why)
        } else {
            write!(f, "{}: {}", self.path, self.why)
        }
    }
}

impl SettingsSchema {
    /// Compiles `schema`; refuses what is not a JSON object or not a valid JSON Schema.
    /// Remote references are not resolved (no network at install time).
    pub fn compile(schema: &Value) -> Result<SettingsSchema, PackageError> {
        if !schema.is_object() {
            return Err(PackageError::SettingsSchema {
                why: "must be a JSON object".into(),
            });
        }
        let validator =
            jsonschema::validator_for(schema).map_err(|e| PackageError::SettingsSchema {
                why: format!("not a valid JSON Schema: {e}"),
            })?;
        Ok(SettingsSchema {
            schema: schema.clone(),
            validator,
        })
    }

    /// The schema as written.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Checks `value`; every violation, each naming where it is.
    pub fn validate(&self, value: &Value) -> Result<(), Vec<SettingsViolation>> {
        let errors: Vec<SettingsViolation> = self
            .validator
            .iter_errors(value)
            .map(|e| SettingsViolation {
                path: e.instance_path().to_string(),
                why: e.to_string(),
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The top-level properties marked secret (`"writeOnly": true`, or `"secret": true`):
    /// never shown back to an operator.
    pub fn secret_fields(&self) -> Vec<String> {
        self.schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| {
                props
                    .iter()
                    .filter(|(_, p)| {
                        p.get("writeOnly").and_then(Value::as_bool) == Some(true)
                            || p.get("secret").and_then(Value::as_bool) == Some(true)
                    })
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn validates_and_names_the_path() {
        let s = SettingsSchema::compile(&json!({
            "type": "object",
            "properties": {
                "threshold": { "type": "integer", "minimum": 1 },
                "token": { "type": "string", "writeOnly": true }
            },
            "required": ["threshold"],
            "additionalProperties": false
        }))
        .unwrap();
        assert!(s.validate(&json!({ "threshold": 3 })).is_ok());
        let errs = s.validate(&json!({ "threshold": "x" })).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "/threshold");
        assert!(
            errs[0].to_string().starts_with("/threshold: "),
            "{}",
            errs[0]
        );
        let errs = s.validate(&json!({ "other": 1 })).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(s.secret_fields(), ["token"]);
    }

    #[test]
    fn refuses_what_is_not_a_schema() {
        let err = SettingsSchema::compile(&json!({ "type": "no-such-type" })).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("settings.schema.json: not a valid JSON Schema"),
            "{err}"
        );
        assert!(SettingsSchema::compile(&json!([1])).is_err());
    }
}
