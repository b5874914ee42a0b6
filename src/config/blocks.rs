//! `[bootstrap.blocks]`: named lists of steps a bootstrap plays where a step says
//! `{ block = "cards" }`, so a platform's dialog is written once and each variant's file gives
//! only its own part (SR OS's card and power lines per chassis: a variant's
//! `[bootstrap.blocks]` merges into the platform's `[bootstrap]`). A `when` on the calling step
//! applies to each step of the block. Owns the expansion and its errors; the steps themselves
//! are checked by `sections` as any other.

use super::schema::StepSection;
use super::{ConfigError, Key};
use std::collections::BTreeMap;

/// `steps` with each `block` step replaced by that block's steps: each with the key an error
/// names (`bootstrap.steps[3]`, `bootstrap.blocks.cards[0]`).
pub(super) fn expand(
    key: &Key,
    steps: &[StepSection],
    blocks: &BTreeMap<String, Vec<StepSection>>,
) -> Result<Vec<(Key, StepSection)>, ConfigError> {
    let mut out = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let step_key = key.child("steps").index(i);
        let Some(name) = &s.block else {
            out.push((step_key, s.clone()));
            continue;
        };
        let only_when = StepSection {
            block: None,
            when: None,
            ..s.clone()
        };
        if only_when != StepSection::default() {
            return Err(step_key.invalid(name, "a block step has only block and when"));
        }
        let Some(block) = blocks.get(name) else {
            let known: Vec<&str> = blocks.keys().map(String::as_str).collect();
            return Err(step_key.child("block").invalid(
                name,
                format!(
                    "no such block in bootstrap.blocks (known: {})",
                    known.join(", ")
                ),
            ));
        };
        for (n, inner) in block.iter().enumerate() {
            let inner_key = key.child("blocks").child(name).index(n);
            if inner.block.is_some() {
                return Err(inner_key.child("block").invalid(
                    inner.block.as_deref().unwrap_or_default(),
                    "a block does not call another",
                ));
            }
            if inner.when.is_some() && s.when.is_some() {
                return Err(inner_key.child("when").invalid(
                    inner.when.as_deref().unwrap_or_default(),
                    "its block's call has a when already",
                ));
            }
            let when = inner.when.clone().or_else(|| s.when.clone());
            out.push((
                inner_key,
                StepSection {
                    when,
                    ..inner.clone()
                },
            ));
        }
    }
    Ok(out)
}
