"""The partner side: Onlinesim's calls for numbers, answered from the live SIM inventory.

`requests` parses the calls, `rules` holds the ledger rules, `desk` answers the calls and owns
activations, `api` serves them over HTTP. A SIM's country and operator come from
`gateway.inventory.networks` (inner code: the inventory never imports this package).
"""
