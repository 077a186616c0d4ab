# rules for the validate stage
