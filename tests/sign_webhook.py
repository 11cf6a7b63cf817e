"""Signs a webhook the way the provider does, with the provider's own library: the independent
reference the inbound tests sign their requests with (tests/api/inbound.rs).

    sign_webhook.py twilio AUTH_TOKEN URL PARAMS_JSON     -> X-Twilio-Signature
    sign_webhook.py standard WHSEC_SECRET ID UNIX_SECS BODY -> webhook-signature
"""

import datetime
import json
import sys

kind = sys.argv[1]
if kind == "twilio":
    from twilio.request_validator import RequestValidator

    token, url, params = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    print(RequestValidator(token).compute_signature(url, params))
elif kind == "standard":
    from standardwebhooks.webhooks import Webhook

    secret, msg_id, secs, body = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    at = datetime.datetime.fromtimestamp(secs, tz=datetime.timezone.utc)
    print(Webhook(secret).sign(msg_id, at, body))
else:
    sys.exit(f"unknown kind {kind}")
