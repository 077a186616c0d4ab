# rules for the compress stage
