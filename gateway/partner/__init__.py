"""The partner side: Onlinesim's calls for numbers, answered from the live SIM inventory.

`requests` parses the calls, `rules` holds the ledger rules, `networks` names a SIM's country
and operator, `desk` answers the calls and owns activations, `api` serves them over HTTP.
"""
