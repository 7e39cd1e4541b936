//! The Docker Engine API version a client asks for with a `/vMAJOR.MINOR`
//! path prefix, and the range moat serves.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The oldest API version moat accepts: Docker 1.12's API, the floor Docker
/// itself has kept since 25.0. Older versions change what bodies mean (before
/// 1.24 `POST /containers/{id}/start` could carry a HostConfig), and moat
/// would rather refuse than judge a body by rules it does not apply.
pub const MIN_API_VERSION: &str = "1.24";

/// The newest API version moat serves, and the one a request without a
/// version prefix gets: Docker 20.10's.
pub const MAX_API_VERSION: &str = "1.41";

/// An API version, `MAJOR.MINOR`. Ordered, so ranges are plain comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    major: u16,
    minor: u16,
}

impl ApiVersion {
    /// [`MIN_API_VERSION`] as a value.
    pub const MIN: ApiVersion = ApiVersion::new(1, 24);
    /// [`MAX_API_VERSION`] as a value.
    pub const MAX: ApiVersion = ApiVersion::new(1, 41);

    pub const fn new(major: u16, minor: u16) -> ApiVersion {
        ApiVersion { major, minor }
    }

    pub const fn major(self) -> u16 {
        self.major
    }

    pub const fn minor(self) -> u16 {
        self.minor
    }

    /// Parses `MAJOR.MINOR` strictly: ASCII digits, no sign, no leading zero,
    /// no third component. Docker's own comparison would read `1.041` as
    /// `1.41`; accepting only one spelling per version keeps every reader of
    /// a path in agreement about what it asked for.
    pub fn parse(text: &str) -> Result<ApiVersion, VersionError> {
        let malformed = || VersionError::Malformed {
            given: text.to_owned(),
        };
        let (major, minor) = text.split_once('.').ok_or_else(malformed)?;
        Ok(ApiVersion::new(
            number(major).ok_or_else(malformed)?,
            number(minor).ok_or_else(malformed)?,
        ))
    }

    /// The version itself if moat serves it, or the error Docker gives for
    /// it (HTTP 400 with the same wording, which clients show as is).
    pub fn check_supported(self) -> Result<ApiVersion, VersionError> {
        if self < ApiVersion::MIN {
            Err(VersionError::TooOld { version: self })
        } else if self > ApiVersion::MAX {
            Err(VersionError::TooNew { version: self })
        } else {
            Ok(self)
        }
    }
}

/// One version component: `0`, or digits without a leading zero.
fn number(text: &str) -> Option<u16> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    if digits_only && !leading_zero {
        text.parse().ok()
    } else {
        None
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for ApiVersion {
    type Err = VersionError;

    fn from_str(text: &str) -> Result<ApiVersion, VersionError> {
        ApiVersion::parse(text)
    }
}

impl Serialize for ApiVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ApiVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ApiVersion, D::Error> {
        let text = String::deserialize(deserializer)?;
        ApiVersion::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a requested API version cannot be served. The too-old and too-new
/// messages are Docker's, word for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error(
        "malformed API version {given:?}: expected MAJOR.MINOR, such as {}",
        MAX_API_VERSION
    )]
    Malformed { given: String },

    #[error(
        "client version {version} is too old. Minimum supported API version is {}, please upgrade your client to a newer version",
        MIN_API_VERSION
    )]
    TooOld { version: ApiVersion },

    #[error(
        "client version {version} is too new. Maximum supported API version is {}",
        MAX_API_VERSION
    )]
    TooNew { version: ApiVersion },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_string_constants_and_the_typed_ones_agree() {
        assert_eq!(ApiVersion::parse(MIN_API_VERSION), Ok(ApiVersion::MIN));
        assert_eq!(ApiVersion::parse(MAX_API_VERSION), Ok(ApiVersion::MAX));
        assert_eq!(ApiVersion::MIN.to_string(), MIN_API_VERSION);
        assert_eq!(ApiVersion::MAX.to_string(), MAX_API_VERSION);
    }

    #[test]
    fn versions_order_numerically_not_textually() {
        assert!(ApiVersion::new(1, 9) < ApiVersion::new(1, 24));
        assert!(ApiVersion::new(1, 41) < ApiVersion::new(2, 0));
    }

    #[test]
    fn only_one_spelling_per_version_parses() {
        for given in [
            "", "1", "1.", ".41", "1.41.0", "01.41", "1.041", "1..41", "+1.41", "1.-41", " 1.41",
            "1.41 ", "1.4a", "v1.41", "1.99999",
        ] {
            assert!(
                matches!(
                    ApiVersion::parse(given),
                    Err(VersionError::Malformed { .. })
                ),
                "{given:?} parsed"
            );
        }
        assert_eq!(ApiVersion::parse("1.0"), Ok(ApiVersion::new(1, 0)));
        assert_eq!(ApiVersion::parse("0.0"), Ok(ApiVersion::new(0, 0)));
    }

    #[test]
    fn the_supported_range_is_inclusive_at_both_ends() {
        assert_eq!(ApiVersion::MIN.check_supported(), Ok(ApiVersion::MIN));
        assert_eq!(ApiVersion::MAX.check_supported(), Ok(ApiVersion::MAX));
        assert!(matches!(
            ApiVersion::new(1, 23).check_supported(),
            Err(VersionError::TooOld { .. })
        ));
        assert!(matches!(
            ApiVersion::new(1, 42).check_supported(),
            Err(VersionError::TooNew { .. })
        ));
    }

    #[test]
    fn range_errors_read_like_dockers() {
        assert_eq!(
            ApiVersion::new(1, 12)
                .check_supported()
                .unwrap_err()
                .to_string(),
            "client version 1.12 is too old. Minimum supported API version is 1.24, \
             please upgrade your client to a newer version"
        );
        assert_eq!(
            ApiVersion::new(9, 99)
                .check_supported()
                .unwrap_err()
                .to_string(),
            "client version 9.99 is too new. Maximum supported API version is 1.41"
        );
    }

    #[test]
    fn serializes_as_a_string() {
        let json = serde_json::to_string(&ApiVersion::MAX).unwrap();
        assert_eq!(json, "\"1.41\"");
        assert_eq!(
            serde_json::from_str::<ApiVersion>(&json).unwrap(),
            ApiVersion::MAX
        );
        assert!(serde_json::from_str::<ApiVersion>("\"1.041\"").is_err());
    }
}
