-- One database per service: each service owns its data and nobody else reads it.
CREATE DATABASE orderflow_orders;
CREATE DATABASE orderflow_inventory;
CREATE DATABASE orderflow_billing;
CREATE DATABASE orderflow_shipping;
