"""The live SIM inventory (see `gateway.inventory.book`) and network naming (`networks`)."""
