"""An SMTP relay that requires a login (AUTH PLAIN or LOGIN, only after STARTTLS), as a
provider's submission port does. Started by scripts/services.sh on 127.0.0.1; mail goes to
a Maildir; every login attempt is appended to a log (the user name and whether it passed,
never the password).

    python smtp_auth.py PORT CERT KEY MAILDIR USER PASSWORD LOGINS
"""
import signal
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

port, cert, key, maildir, user, password, logins = sys.argv[1:8]


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == user
        and auth_data.password.decode() == password
    )
    with open(logins, "a") as f:
        f.write(f"{mechanism} {auth_data.login.decode() if isinstance(auth_data, LoginPassword) else '?'} {'ok' if ok else 'refused'}\n")
    # handled=False: aiosmtpd answers 535 itself (with the default, it answers nothing).
    return AuthResult(success=ok, handled=False)


tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
tls.load_cert_chain(cert, key)
controller = Controller(
    Mailbox(maildir),
    hostname="127.0.0.1",
    port=int(port),
    tls_context=tls,
    require_starttls=True,
    authenticator=authenticate,
    auth_required=True,
    auth_require_tls=True,
)
controller.start()
signal.signal(signal.SIGTERM, lambda *_: (controller.stop(), sys.exit(0)))
signal.pause()
