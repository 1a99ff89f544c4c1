//! Server-side sessions: in memory, per worker process, named by a random cookie.
//!
//! A session keeps the key's id and the SHA-256 of its secret (never the key), its CSRF token,
//! and an admin's tenant filter. It ends after `console.session_idle_secs` without a request,
//! `console.session_max_secs` after sign-in, at sign-out, or when the key ring no longer
//! accepts the key. Behind a load balancer, route `/console` to one worker per browser (or sign
//! in again when it moves): sessions are not shared between processes.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use cookie::{Cookie, SameSite};
use waybill_config::{ConsoleSettings, SecureCookie};
use waybill_core::TenantId;
use waybill_core::access::{KeyId, SecretHash};

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "waybill_console";
/// The sign-in form's cookie (the double-submit token that makes sign-in CSRF-proof).
pub(crate) const LOGIN_COOKIE: &str = "waybill_console_login";

/// Most sessions one process keeps; signing in beyond it ends the oldest one.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The key that signed in.
    pub key_id: KeyId,
    /// SHA-256 of its secret, to ask the ring about it again.
    pub secret_sha256: SecretHash,
    /// The token every state-changing form must carry.
    pub csrf: String,
    /// An admin's tenant filter (`None`: every tenant).
    pub tenant_filter: Option<TenantId>,
    created: Instant,
    last_seen: Instant,
}

/// Every session of this process.
#[derive(Debug)]
pub(crate) struct SessionStore {
    sessions: Mutex<HashMap<String, Session>>,
    idle: Duration,
    max: Duration,
    secure: SecureCookie,
}

impl SessionStore {
    pub(crate) fn new(settings: &ConsoleSettings) -> SessionStore {
        SessionStore {
            sessions: Mutex::new(HashMap::new()),
            idle: Duration::from_secs(settings.session_idle_secs),
            max: Duration::from_secs(settings.session_max_secs),
            secure: settings.secure_cookie,
        }
    }

    /// Starts a session for a key; returns its id (the cookie's value).
    pub(crate) fn create(&self, key_id: KeyId, secret_sha256: SecretHash) -> String {
        let id = random_token();
        let now = Instant::now();
        let session = Session {
            key_id,
            secret_sha256,
            csrf: random_token(),
            tenant_filter: None,
            created: now,
            last_seen: now,
        };
        let mut sessions = self.lock();
        sessions.retain(|_, session| self.is_live(session, now));
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, session)| session.last_seen)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), session);
        id
    }

    /// The live session `id` names, touched (its idle time restarts); expired ones are removed.
    pub(crate) fn touch(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut sessions = self.lock();
        let live = sessions
            .get(id)
            .is_some_and(|session| self.is_live(session, now));
        if !live {
            sessions.remove(id);
            return None;
        }
        let session = sessions.get_mut(id)?;
        session.last_seen = now;
        Some(session.clone())
    }

    /// Ends a session.
    pub(crate) fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Sets an admin's tenant filter.
    pub(crate) fn set_tenant_filter(&self, id: &str, tenant: Option<TenantId>) {
        if let Some(session) = self.lock().get_mut(id) {
            session.tenant_filter = tenant;
        }
    }

    /// How many sessions are held (live or not yet swept).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn is_live(&self, session: &Session, now: Instant) -> bool {
        now.duration_since(session.created) < self.max
            && now.duration_since(session.last_seen) < self.idle
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A `Set-Cookie` value for `name`: `HttpOnly`, `SameSite=Strict`, `Path=/console`, and
    /// `Secure` per `console.secure_cookie`. `value` `None` deletes the cookie.
    pub(crate) fn cookie(&self, name: &'static str, value: Option<String>, https: bool) -> String {
        let deleting = value.is_none();
        let mut cookie = Cookie::new(name, value.unwrap_or_default());
        cookie.set_http_only(true);
        cookie.set_same_site(SameSite::Strict);
        cookie.set_path(crate::BASE);
        cookie.set_secure(match self.secure {
            SecureCookie::Always => true,
            SecureCookie::Never => false,
            SecureCookie::Auto => https,
        });
        if deleting {
            cookie.set_max_age(cookie::time::Duration::ZERO);
        }
        cookie.to_string()
    }
}

/// 32 random bytes, base64url: session ids, CSRF and sign-in tokens.
pub(crate) fn random_token() -> String {
    // ThreadRng is a CSPRNG seeded from the operating system.
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares two tokens in time independent of where they differ.
pub(crate) fn tokens_match(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// The value of cookie `name` in a `Cookie` header.
pub(crate) fn cookie_value(header: Option<&str>, name: &str) -> Option<String> {
    Cookie::split_parse(header?)
        .flatten()
        .find(|cookie| cookie.name() == name)
        .map(|cookie| cookie.value().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(idle: u64, max: u64, secure: SecureCookie) -> SessionStore {
        SessionStore::new(&ConsoleSettings {
            session_idle_secs: idle,
            session_max_secs: max,
            secure_cookie: secure,
            ..ConsoleSettings::default()
        })
    }

    fn key() -> (KeyId, SecretHash) {
        (
            KeyId::parse("ab12cd34ef56").unwrap(),
            SecretHash::from_slice(&[1; 32]).unwrap(),
        )
    }

    #[test]
    fn sessions_live_until_ended_and_have_their_own_tokens() {
        let sessions = store(60, 120, SecureCookie::Auto);
        let (id, hash) = key();
        let first = sessions.create(id.clone(), hash);
        let second = sessions.create(id, hash);
        assert_ne!(first, second);
        let one = sessions.touch(&first).unwrap();
        let two = sessions.touch(&second).unwrap();
        assert_ne!(one.csrf, two.csrf);
        assert!(sessions.touch("not-a-session").is_none());
        sessions.end(&first);
        assert!(sessions.touch(&first).is_none());
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn idle_and_absolute_timeouts_end_sessions() {
        let idle = SessionStore {
            idle: Duration::from_millis(30),
            ..store(60, 120, SecureCookie::Auto)
        };
        let (id, hash) = key();
        let session = idle.create(id.clone(), hash);
        std::thread::sleep(Duration::from_millis(50));
        assert!(idle.touch(&session).is_none(), "idle too long");

        let absolute = SessionStore {
            max: Duration::from_millis(60),
            idle: Duration::from_millis(45),
            ..store(60, 120, SecureCookie::Auto)
        };
        let session = absolute.create(id, hash);
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(25));
            let _ = absolute.touch(&session);
        }
        assert!(
            absolute.touch(&session).is_none(),
            "past the absolute limit"
        );
    }

    #[test]
    fn cookies_are_strict_http_only_and_secure_as_configured() {
        let auto = store(60, 120, SecureCookie::Auto);
        let plain = auto.cookie(SESSION_COOKIE, Some("v".into()), false);
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(plain.contains("Path=/console") && !plain.contains("Secure"));
        assert!(
            auto.cookie(SESSION_COOKIE, Some("v".into()), true)
                .contains("Secure")
        );
        let always = store(60, 120, SecureCookie::Always);
        assert!(
            always
                .cookie(SESSION_COOKIE, Some("v".into()), false)
                .contains("Secure")
        );
        let gone = auto.cookie(SESSION_COOKIE, None, false);
        assert!(gone.contains("Max-Age=0"));
    }

    #[test]
    fn cookie_headers_and_tokens_parse() {
        let header = "a=1; waybill_console=abc; b=2";
        assert_eq!(
            cookie_value(Some(header), SESSION_COOKIE).as_deref(),
            Some("abc")
        );
        assert_eq!(cookie_value(Some(header), "missing"), None);
        assert_eq!(cookie_value(None, SESSION_COOKIE), None);
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "abd"));
        assert!(!tokens_match("abc", "abcd"));
        assert_eq!(random_token().len(), 43);
    }
}
