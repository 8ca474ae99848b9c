"""Where raw corpora come from: each module turns one kind of source into RawRecords."""
