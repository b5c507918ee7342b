//! Recognising "cached plan must not change result type".
//!
//! The message text is translated under `lc_messages`; the routine field is not. So the error is
//! recognised by SQLSTATE `0A000` plus routine `RevalidateCachedQuery` (older servers:
//! `RevalidateCachedPlan`), with the English text as a fallback when the routine is absent.
//! `0A000` alone is the generic "feature not supported" and never triggers a heal.

use crate::protocol::backend::ErrorFields;
use crate::protocol::sqlstate;

pub const CACHED_PLAN_MESSAGE: &str = "cached plan must not change result type";

/// The error as PostgreSQL sends it (same code, message and routine, so drivers recognise it),
/// for the cases where pgheal must refuse a statement itself.
pub fn cached_plan_error() -> crate::protocol::Frame {
    crate::protocol::encode::error_fields(
        b'E',
        &[
            (b'S', b"ERROR"),
            (b'V', b"ERROR"),
            (b'C', sqlstate::FEATURE_NOT_SUPPORTED.as_bytes()),
            (b'M', CACHED_PLAN_MESSAGE.as_bytes()),
            (b'R', b"RevalidateCachedQuery"),
        ],
    )
}

pub fn is_cached_plan_error(e: &ErrorFields<'_>) -> bool {
    if e.code() != Some(sqlstate::FEATURE_NOT_SUPPORTED) {
        return false;
    }
    match e.routine() {
        Some(r) => {
            r.starts_with(b"RevalidateCachedQuery") || r.starts_with(b"RevalidateCachedPlan")
        }
        None => e.message() == Some(CACHED_PLAN_MESSAGE.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode;

    fn fields(body: &[(u8, &str)]) -> bool {
        let body: Vec<(u8, &[u8])> = body.iter().map(|(c, v)| (*c, v.as_bytes())).collect();
        let f = encode::error_fields(b'E', &body);
        is_cached_plan_error(&ErrorFields::decode(&f).unwrap())
    }

    #[test]
    fn pgheal_own_refusal_is_recognised_as_the_error() {
        let f = cached_plan_error();
        assert!(is_cached_plan_error(&ErrorFields::decode(&f).unwrap()));
    }

    #[test]
    fn recognises_by_code_and_routine() {
        assert!(fields(&[
            (b'C', "0A000"),
            (b'M', "x"),
            (b'R', "RevalidateCachedQuery")
        ]));
        assert!(fields(&[(b'C', "0A000"), (b'R', "RevalidateCachedPlan")]));
        assert!(fields(&[(b'C', "0A000"), (b'M', CACHED_PLAN_MESSAGE)]));
    }

    #[test]
    fn other_feature_not_supported_errors_pass() {
        assert!(!fields(&[
            (b'C', "0A000"),
            (b'M', "cannot do that"),
            (b'R', "transformX")
        ]));
        assert!(!fields(&[(b'C', "0A000"), (b'M', "translated text")]));
        assert!(!fields(&[(b'C', "42P01"), (b'R', "RevalidateCachedQuery")]));
    }
}
