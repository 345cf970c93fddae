//! Filling `${NAME}` placeholders in a config template with real addresses.

use std::collections::HashMap;

/// Replaces every `${KEY}` in `template` with its value; unknown keys are an error.
pub fn render(template: &str, values: &HashMap<&str, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("unterminated ${")?;
        let key = &after[..end];
        let value = values
            .get(key)
            .ok_or_else(|| format!("no value for ${{{key}}}"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_placeholders_and_rejects_unknown_ones() {
        let values = HashMap::from([("A", "1.2.3.4:5".to_owned())]);
        assert_eq!(
            render("x: ${A}, y: ${A}", &values).unwrap(),
            "x: 1.2.3.4:5, y: 1.2.3.4:5"
        );
        assert!(render("${B}", &values).is_err());
        assert!(render("${A", &values).is_err());
    }
}
