# rules for the export stage
