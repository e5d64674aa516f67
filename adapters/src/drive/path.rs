//! Drive paths: what a path inside a drive may look like, and how untrusted
//! names (relay identifiers, uploaded file names) become safe path segments.
//!
//! Contract:
//! - A drive path is canonical: `/` followed by one or more segments joined by
//!   `/`, each segment non-empty, not `.` or `..`, free of `\` and control
//!   characters, at most [`MAX_SEGMENT_BYTES`] bytes; the whole path at most
//!   [`MAX_PATH_BYTES`]. [`validate_path`] accepts exactly these, so one file
//!   has one name (no `a//b`, `./a` or `a/` aliases).
//! - [`sanitize_segment`] is the original gateway's sanitisation, applied in
//!   its order: leading `.`, `/` and `\` characters removed, every `..` removed,
//!   every character outside `[a-zA-Z0-9._:-]` replaced by `_`. Like the
//!   original's JavaScript regex (which works on UTF-16 code units), a character
//!   outside the Basic Multilingual Plane becomes two `_`. What the original
//!   lacked: an empty result or one longer than [`MAX_SEGMENT_BYTES`] is an
//!   error, never a path.
//! - A sanitised segment never contains `/` or `\`, never starts with `.`, and
//!   never contains `..`, so it is always a valid segment and a safe directory
//!   name.

/// Longest path segment, in bytes (a common file-system name limit: sanitised
/// identifiers also name directories).
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Longest drive path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// Why a path or name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    // --- the caller (or the remote client behind it) sent a bad name ---
    /// Nothing is left of the name after sanitisation (or it was empty).
    #[error("name {0:?} is empty after sanitisation")]
    EmptyName(String),
    /// A name or segment is longer than [`MAX_SEGMENT_BYTES`].
    #[error("name of {found} bytes exceeds the {MAX_SEGMENT_BYTES}-byte limit")]
    NameTooLong {
        /// Its length in bytes.
        found: usize,
    },
    /// A path is longer than [`MAX_PATH_BYTES`].
    #[error("path of {found} bytes exceeds the {MAX_PATH_BYTES}-byte limit")]
    PathTooLong {
        /// Its length in bytes.
        found: usize,
    },
    /// A path is not in canonical form.
    #[error("path {path:?} is not canonical: {reason}")]
    NotCanonical {
        /// The path (truncated to the limit when overlong).
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Checks that `path` is a canonical drive path (see the module docs).
pub fn validate_path(path: &str) -> Result<(), PathError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::PathTooLong { found: path.len() });
    }
    let not_canonical = |reason| PathError::NotCanonical {
        path: path.to_owned(),
        reason,
    };
    let Some(rest) = path.strip_prefix('/') else {
        return Err(not_canonical("it must start with '/'"));
    };
    for segment in rest.split('/') {
        validate_segment(segment).map_err(|e| match e {
            PathError::NotCanonical { reason, .. } => not_canonical(reason),
            other => other,
        })?;
    }
    Ok(())
}

/// Checks that `segment` is a valid single path segment.
pub fn validate_segment(segment: &str) -> Result<(), PathError> {
    let not_canonical = |reason| PathError::NotCanonical {
        path: segment.to_owned(),
        reason,
    };
    if segment.is_empty() {
        return Err(not_canonical("empty segment"));
    }
    if segment.len() > MAX_SEGMENT_BYTES {
        return Err(PathError::NameTooLong {
            found: segment.len(),
        });
    }
    if segment == "." || segment == ".." {
        return Err(not_canonical("'.' and '..' segments are not allowed"));
    }
    if segment.contains('/') {
        return Err(not_canonical("a segment cannot contain '/'"));
    }
    if segment.contains('\\') || segment.chars().any(char::is_control) {
        return Err(not_canonical("backslash or control character"));
    }
    Ok(())
}

/// The original gateway's segment sanitisation, plus the checks it lacked (see
/// the module docs). `raw` is untrusted.
pub fn sanitize_segment(raw: &str) -> Result<String, PathError> {
    let without_leading = raw.trim_start_matches(['.', '/', '\\']);
    // `str::replace` removes non-overlapping matches left to right, like the
    // original's `/\.\./g`: a run of n dots keeps n mod 2 of them.
    let without_parent = without_leading.replace("..", "");
    let mut clean = String::with_capacity(without_parent.len());
    for c in without_parent.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-') {
            clean.push(c);
        } else {
            // One `_` per UTF-16 code unit, as the original's regex replaced them.
            for _ in 0..c.len_utf16() {
                clean.push('_');
            }
        }
    }
    if clean.is_empty() {
        return Err(PathError::EmptyName(raw.chars().take(64).collect()));
    }
    if clean.len() > MAX_SEGMENT_BYTES {
        return Err(PathError::NameTooLong { found: clean.len() });
    }
    Ok(clean)
}

/// Joins already-valid segments into a canonical path.
pub(crate) fn join(segments: &[&str]) -> Result<String, PathError> {
    let mut path = String::new();
    for segment in segments {
        path.push('/');
        path.push_str(segment);
    }
    validate_path(&path)?;
    Ok(path)
}
