"""What every domain shares: column names and defaults, content hashes, JSON-safe figures,
local server processes. Imports nothing of the project but ``config``."""
