//! Accounts: what registration is made of, and what a user may read about themselves.

use super::ids::UserId;
use super::password::Password;
use super::password_policy::PasswordPolicy;
use super::profile_text::ProfileText;
use super::secret::SecretString;
use super::username::Username;
use super::validation::FieldError;

/// A registration as the client sent it: raw text, parsed by [`NewUser::parse`].
pub struct RegistrationForm {
    pub username: String,
    pub full_name: String,
    pub password: SecretString,
    pub mothers_favorite_search_engine: String,
}

/// A registration whose every field is valid. Carries the password, so no `Debug`.
pub struct NewUser {
    pub username: Username,
    pub full_name: ProfileText,
    /// A profile detail, never an authenticator (it is no secret, and is shown to its owner).
    pub mothers_favorite_search_engine: ProfileText,
    pub password: Password,
}

impl NewUser {
    /// Parses every field, reporting all failures at once. The password must not be built from
    /// the username or the full name as typed.
    pub fn parse(form: RegistrationForm, policy: &PasswordPolicy) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let username = Username::parse(&form.username)
            .map_err(|e| errors.push(FieldError::new("username", e.code(), e.to_string())))
            .ok();
        let full_name = ProfileText::parse("full_name", &form.full_name)
            .map_err(|e| errors.push(e))
            .ok();
        let engine = ProfileText::parse(
            "mothers_favorite_search_engine",
            &form.mothers_favorite_search_engine,
        )
        .map_err(|e| errors.push(e))
        .ok();
        let context = [form.username.as_str(), form.full_name.as_str()];
        let password = policy
            .accept("password", &form.password, &context)
            .map_err(|e| errors.push(e))
            .ok();
        match (username, full_name, engine, password) {
            (Some(username), Some(full_name), Some(engine), Some(password)) => Ok(Self {
                username,
                full_name,
                mothers_favorite_search_engine: engine,
                password,
            }),
            _ => Err(errors),
        }
    }
}

/// What a user may read about themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    pub id: UserId,
    pub username: Username,
    pub full_name: ProfileText,
    pub mothers_favorite_search_engine: ProfileText,
    pub created_at: i64,
    /// Whether the account has a second factor.
    pub totp: super::totp::TotpStatus,
}

#[cfg(test)]
impl UserProfile {
    /// A profile for the tests of what holds profiles (views, caches), where only the id matters.
    pub(crate) fn with_id(id: &str) -> Self {
        Self {
            id: UserId::from_string(id.to_owned()),
            username: Username::parse("someone").unwrap(),
            full_name: ProfileText::from_stored("Some One".into()),
            mothers_favorite_search_engine: ProfileText::from_stored("Searx".into()),
            created_at: 0,
            totp: super::totp::TotpStatus::Off,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(username: &str, full_name: &str, password: &str, engine: &str) -> RegistrationForm {
        RegistrationForm {
            username: username.into(),
            full_name: full_name.into(),
            password: SecretString::from(password.to_owned()),
            mothers_favorite_search_engine: engine.into(),
        }
    }

    #[test]
    fn a_valid_form_parses_into_its_cleaned_fields() {
        let form = form(
            "kvothe",
            "Patrick Rothfuss ",
            "3##Heel7sa*9-zRwT",
            "Duck Duck Go ",
        );
        let Ok(user) = NewUser::parse(form, &PasswordPolicy::default()) else {
            panic!("refused");
        };
        assert_eq!(user.username.canonical(), "kvothe");
        assert_eq!(user.full_name.as_str(), "Patrick Rothfuss");
        assert_eq!(user.mothers_favorite_search_engine.as_str(), "Duck Duck Go");
        assert_eq!(user.password.as_str(), "3##Heel7sa*9-zRwT");
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let form = form("", "", "short", "");
        let Err(errors) = NewUser::parse(form, &PasswordPolicy::default()) else {
            panic!("accepted");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_ref()).collect();
        assert_eq!(
            fields,
            [
                "username",
                "full_name",
                "mothers_favorite_search_engine",
                "password"
            ]
        );
    }
}
