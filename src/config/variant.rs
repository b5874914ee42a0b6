//! `[variant]`: one platform, several machines chosen at start by the lab tool's variant
//! (vrnetlab's and containerlab's `--variant`, e.g. SR OS's `sr-1` or `sr-7s`). The section
//! names a file per variant, `file = "variants/{variant}.toml"`, and the variant taken when none
//! is given, `default = "sr-1"`. The chosen file (its own `include`s expanded) is merged over the
//! config as an include is, but last: its tables merge key by key, anything else replaces. It
//! may turn a one-VM config into `[[vm]]` entries. Owns the choice, the name's check and the
//! error listing the known variants; reads only the variant's file and the names in its
//! folder. Never decides what a variant holds.

use super::{ConfigError, Key};
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// The key an unknown or bad variant is reported under (the flag containerlab passes).
const FLAG: &str = "--variant";

/// `text` (includes already expanded) with its variant merged in, and the variant's name; or
/// `text` as it is and None when the file has no `[variant]`.
pub(super) fn apply(
    text: &str,
    path: &Path,
    given: Option<&str>,
) -> Result<(String, Option<String>), ConfigError> {
    let mut table: Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
    let Some(section) = table.remove("variant") else {
        return Ok((text.to_string(), None));
    };
    let (pattern, default) = section_values(section)?;
    let name = match given.map(str::trim).filter(|g| !g.is_empty()) {
        Some(g) => g.to_lowercase(),
        None => default.ok_or_else(|| {
            Key::new(FLAG).invalid("", "this platform needs a variant (no variant.default)")
        })?,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let file = dir.join(pattern.replace("{variant}", &name));
    if !plain_name(&name) || !file.is_file() {
        return Err(Key::new(FLAG).invalid(
            &name,
            format!(
                "no such variant (a file {}); known: {}",
                file.display(),
                known(dir, &pattern).join(", ")
            ),
        ));
    }
    let chosen = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
        path: file.clone(),
        source,
    })?;
    let chosen: Table = super::include::expand(&chosen, &file)?
        .parse()
        .expect("an expanded include is a TOML table");
    super::include::merge(&mut table, chosen);
    Ok((
        toml::to_string(&table).expect("a TOML table serializes"),
        Some(name),
    ))
}

/// `variant.file` (containing `{variant}`) and `variant.default`.
fn section_values(section: Value) -> Result<(String, Option<String>), ConfigError> {
    let key = Key::new("variant");
    let Value::Table(mut t) = section else {
        return Err(key.invalid(section.type_str(), "expected a [variant] table"));
    };
    let mut string = |k: &str| -> Result<Option<String>, ConfigError> {
        match t.remove(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(key.child(k).invalid(v, "expected a string")),
        }
    };
    let file = string("file")?.filter(|f| f.contains("{variant}"));
    let file = file.ok_or_else(|| {
        key.child("file").invalid(
            "",
            "expected a file name with {variant}, e.g. variants/{variant}.toml",
        )
    })?;
    let default = string("default")?;
    if let Some(k) = t.keys().next() {
        return Err(key.child(k).invalid("", "unknown key (file, default)"));
    }
    Ok((file, default))
}

/// A variant name that can be part of a file name: letters, digits, '.', '_', '-', not
/// starting with '.' (containerlab's custom `cp: ... lc: ...` lines are not).
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The variants there are: the names `pattern` matches in its folder, sorted.
fn known(dir: &Path, pattern: &str) -> Vec<String> {
    let full: PathBuf = dir.join(pattern);
    let (Some(folder), Some(file)) = (full.parent(), full.file_name()) else {
        return vec![];
    };
    let file = file.to_string_lossy();
    let Some((pre, post)) = file.split_once("{variant}") else {
        return vec![];
    };
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let n = e.ok()?.file_name().to_string_lossy().into_owned();
            let v = n.strip_prefix(pre)?.strip_suffix(post)?;
            (!v.is_empty()).then(|| v.to_string())
        })
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lt-sros-variant-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("variants")).unwrap();
        std::fs::write(d.join("shared.toml"), "[vm]\ncpu = \"host\"\nsmp = 2\n").unwrap();
        std::fs::write(
            d.join("variants/small.toml"),
            "include = [\"../shared.toml\"]\n[vm]\nmemory = 2048\n",
        )
        .unwrap();
        std::fs::write(
            d.join("variants/two.toml"),
            "[[vm]]\nname = \"cp\"\n[[vm]]\nname = \"lc1\"\n",
        )
        .unwrap();
        d
    }

    const MAIN: &str =
        "[variant]\nfile = \"variants/{variant}.toml\"\ndefault = \"small\"\n[vm]\nmemory = 1024\nname = \"r\"\n";

    #[test]
    fn the_given_or_default_variant_is_merged_over_the_file() {
        let d = dir("merge");
        let main = d.join("launcher.toml");
        let (text, name) = apply(MAIN, &main, None).unwrap();
        assert_eq!(name.as_deref(), Some("small"));
        let t: Table = text.parse().unwrap();
        assert!(!t.contains_key("variant"));
        let vm = t["vm"].as_table().unwrap();
        assert_eq!(vm["memory"].as_integer(), Some(2048), "the variant wins");
        assert_eq!(vm["smp"].as_integer(), Some(2), "its own include expanded");
        assert_eq!(vm["name"].as_str(), Some("r"), "the file's keys stay");
        // Given (containerlab's case), upper case as vrnetlab accepts it: [vm] becomes [[vm]].
        let (text, name) = apply(MAIN, &main, Some("TWO")).unwrap();
        assert_eq!(name.as_deref(), Some("two"));
        let t: Table = text.parse().unwrap();
        assert_eq!(t["vm"].as_array().unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unknown_or_custom_variant_is_an_error_naming_the_flag_and_the_known_ones() {
        let d = dir("unknown");
        let main = d.join("launcher.toml");
        for bad in [
            "sr-99",
            "cp: cpu=2 ram=4 chassis=ixr-e slot=A card=cpm-ixr-e",
            "../x",
        ] {
            let e = apply(MAIN, &main, Some(bad)).unwrap_err().to_string();
            assert!(e.starts_with("--variant = "), "{e}");
            assert!(e.contains("known: small, two"), "{e}");
        }
        let e = apply("[variant]\nfile = \"v.toml\"\n", &main, None).unwrap_err();
        assert!(e.to_string().starts_with("variant.file"), "{e}");
        let e = apply(
            "[variant]\nfile = \"variants/{variant}.toml\"\n",
            &main,
            None,
        );
        assert!(e.unwrap_err().to_string().contains("needs a variant"));
        let (text, name) = apply("[vm]\nmemory = 1\n", &main, Some("x")).unwrap();
        assert_eq!((text.as_str(), name), ("[vm]\nmemory = 1\n", None));
        let _ = std::fs::remove_dir_all(&d);
    }
}
