//! Alert mail over SMTP (lettre): plain, STARTTLS or TLS from the first byte, with or
//! without a login (a home relay that takes mail unauthenticated must work), and with an
//! extra CA for a relay whose certificate no public root signs.

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use crate::config::{AlertConfig, SmtpSecurity};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one mail to every address of `a`. The error names the server and what failed,
/// never the password.
pub fn send(a: &AlertConfig, subject: &str, body: &str) -> Result<(), String> {
    let host = a
        .smtp_host
        .as_deref()
        .ok_or("smtp-host is not set")?
        .to_string();
    let from: Mailbox = a
        .from
        .clone()
        .unwrap_or_else(|| format!("lomob@{}", super::hostname()))
        .parse()
        .map_err(|e| format!("from address: {e}"))?;
    let mut msg = Message::builder().from(from).subject(subject);
    for to in &a.email {
        msg = msg.to(to.parse().map_err(|e| format!("address {to:?}: {e}"))?);
    }
    let msg = msg
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_string())
        .map_err(|e| format!("cannot build the mail: {e}"))?;
    let port = a.smtp_port.unwrap_or(match a.smtp_security {
        SmtpSecurity::None => 25,
        SmtpSecurity::Starttls => 587,
        SmtpSecurity::Tls => 465,
    });
    let mut b = SmtpTransport::builder_dangerous(&host)
        .port(port)
        .timeout(Some(TIMEOUT));
    if a.smtp_security != SmtpSecurity::None {
        let mut params = TlsParameters::builder(host.clone());
        if let Some(ca) = &a.smtp_ca {
            let pem = std::fs::read(ca).map_err(|e| format!("smtp-ca {}: {e}", ca.display()))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| format!("smtp-ca {}: {e}", ca.display()))?;
            params = params.add_root_certificate(cert);
        }
        let params = params
            .build_rustls()
            .map_err(|e| format!("TLS settings for {host}: {e}"))?;
        b = b.tls(match a.smtp_security {
            SmtpSecurity::Tls => Tls::Wrapper(params),
            _ => Tls::Required(params),
        });
    }
    if let Some(user) = &a.smtp_user {
        let password = match &a.smtp_password {
            Some(p) => p.reveal().map_err(|e| format!("smtp-password: {e}"))?,
            None => String::new(),
        };
        b = b.credentials(Credentials::new(user.clone(), password));
    }
    b.build().send(&msg).map(|_| ()).map_err(|e| {
        // 535 (and 530, 534): the relay refused the login, or wants one.
        let login = matches!(
            e.status().map(|c| c.to_string()).as_deref(),
            Some("535" | "534" | "530")
        );
        let hint = match (login, &a.smtp_user) {
            (true, Some(_)) => ": the relay refused the login; check smtp-user and smtp-password",
            (true, None) => ": the relay wants a login; set smtp-user and smtp-password",
            _ => "",
        };
        format!("mail through {host}:{port}: {e}{hint}")
    })
}
