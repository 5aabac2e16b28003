//! The verification mail and the transports that carry it: SMTP with lettre (plain, STARTTLS
//! or TLS, as `SMTP_URL` says) or, in development, `.eml` files in a folder.

use std::{path::PathBuf, str::FromStr as _};

use anyhow::Context as _;
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
};
use uuid::Uuid;

use crate::config::{MailLink, MailSettings, MailTransportSettings};

/// The path of the `VerifyEmail` GET binding (proto/tally/v1/users.proto).
pub const VERIFY_EMAIL_PATH: &str = "/v1/verify_email";
/// The web console's verify screen (src/console/): the parameters go in the fragment, so the
/// code reaches neither a server log nor a `Referer`.
pub const CONSOLE_VERIFY_PATH: &str = "/console/#/verify";
pub const SUBJECT: &str = "Verify your email address for tally";

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files {
        transport: AsyncFileTransport<Tokio1Executor>,
        dir: PathBuf,
    },
}

/// What one mail says.
pub struct VerificationMail<'a> {
    pub to: &'a str,
    pub username: &'a str,
    pub verification_id: Uuid,
    pub code: &'a str,
    pub expires_at: time::OffsetDateTime,
}

pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    public_url: String,
    link: MailLink,
}

impl Mailer {
    pub fn new(settings: &MailSettings) -> anyhow::Result<Self> {
        let transport = match &settings.transport {
            MailTransportSettings::Smtp { url, timeout } => Transport::Smtp(
                // The error never includes the URL (it may hold a password).
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|err| anyhow::anyhow!("SMTP_URL: {err}"))?
                    .timeout(Some(*timeout))
                    .build(),
            ),
            MailTransportSettings::Files(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("TALLY_MAIL_DIR: creating {}", dir.display()))?;
                Transport::Files {
                    transport: AsyncFileTransport::<Tokio1Executor>::new(dir),
                    dir: dir.clone(),
                }
            }
        };
        Ok(Mailer {
            transport,
            from: Mailbox::from_str(&settings.from).context("TALLY_MAIL_FROM")?,
            public_url: settings.public_url.clone(),
            link: settings.link,
        })
    }

    /// The link the mail carries; the GET binding of `VerifyEmail` (or the console's page)
    /// takes both parameters. Both are URL-safe as they are (a UUID and unpadded base64url).
    pub fn link(&self, verification_id: Uuid, code: &str) -> String {
        let path = match self.link {
            MailLink::Api => VERIFY_EMAIL_PATH,
            MailLink::Console => CONSOLE_VERIFY_PATH,
        };
        format!(
            "{}{path}?verification_id={verification_id}&code={code}",
            self.public_url
        )
    }

    pub fn compose(&self, mail: &VerificationMail<'_>) -> anyhow::Result<Message> {
        let (text, html) = self.bodies(mail);
        let to = Mailbox::from_str(mail.to).context("recipient address")?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(SUBJECT)
            .multipart(MultiPart::alternative_plain_html(text, html))
            .context("building the verification mail")
    }

    /// The text and the HTML part, before transfer encoding.
    fn bodies(&self, mail: &VerificationMail<'_>) -> (String, String) {
        let link = self.link(mail.verification_id, mail.code);
        let expires = mail
            .expires_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| mail.expires_at.to_string());
        let text = format!(
            "Hello {username},\n\n\
             please confirm that this address belongs to your tally account by opening\n\
             this link:\n\n{link}\n\n\
             Or call VerifyEmail yourself with\n\
             verification_id: {id}\n\
             code: {code}\n\n\
             The code works once and expires at {expires}.\n\
             If you did not sign up for tally, ignore this mail.\n",
            username = mail.username,
            id = mail.verification_id,
            code = mail.code,
        );
        let html = format!(
            "<!doctype html>\n<html><body>\n\
             <p>Hello {username},</p>\n\
             <p>please confirm that this address belongs to your tally account:</p>\n\
             <p><a href=\"{link}\">Verify my email address</a></p>\n\
             <p>Or call <code>VerifyEmail</code> yourself with<br>\n\
             verification_id: <code>{id}</code><br>\ncode: <code>{code}</code></p>\n\
             <p>The code works once and expires at {expires}.\n\
             If you did not sign up for tally, ignore this mail.</p>\n</body></html>\n",
            username = escape_html(mail.username),
            link = escape_html(&link),
            id = mail.verification_id,
            code = escape_html(mail.code),
        );
        (text, html)
    }

    /// Hands the message over; returns where it went, for the log.
    pub async fn send(&self, message: Message) -> anyhow::Result<String> {
        match &self.transport {
            Transport::Smtp(smtp) => {
                let response = smtp.send(message).await?;
                Ok(format!("smtp {}", response.code()))
            }
            Transport::Files { transport, dir } => {
                let id = transport.send(message).await?;
                Ok(dir.join(format!("{id}.eml")).display().to_string())
            }
        }
    }
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailer() -> Mailer {
        Mailer::new(&MailSettings {
            transport: MailTransportSettings::Files(std::env::temp_dir().join("tally-mail-unit")),
            from: "tally <no-reply@example.com>".into(),
            public_url: "https://tally.example.com".into(),
            link: MailLink::Api,
        })
        .unwrap()
    }

    #[test]
    fn the_mail_has_a_text_and_an_html_part_with_the_link_and_the_code() {
        let id = Uuid::now_v7();
        let mailer = mailer();
        let mail = VerificationMail {
            to: "alice@example.com",
            username: "alice",
            verification_id: id,
            code: "c0de-_x",
            expires_at: time::OffsetDateTime::now_utc(),
        };
        let raw = String::from_utf8(mailer.compose(&mail).unwrap().formatted()).unwrap();
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(
            raw.contains("text/plain") && raw.contains("text/html"),
            "{raw}"
        );
        let (text, html) = mailer.bodies(&mail);
        let link =
            format!("https://tally.example.com/v1/verify_email?verification_id={id}&code=c0de-_x");
        assert!(text.contains(&link), "{text}");
        assert!(text.contains("code: c0de-_x"), "{text}");
        assert!(html.contains(&link.replace('&', "&amp;")), "{html}");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn the_console_link_carries_the_parameters_in_the_fragment() {
        let mailer = Mailer::new(&MailSettings {
            transport: MailTransportSettings::Files(std::env::temp_dir().join("tally-mail-unit")),
            from: "tally <no-reply@example.com>".into(),
            public_url: "https://tally.example.com".into(),
            link: MailLink::Console,
        })
        .unwrap();
        let id = Uuid::now_v7();
        assert_eq!(
            mailer.link(id, "c0de"),
            format!("https://tally.example.com/console/#/verify?verification_id={id}&code=c0de")
        );
    }
}
