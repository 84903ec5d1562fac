"""`python -m gateway` is `sms-gateway`."""

from gateway.cli import main

raise SystemExit(main())
