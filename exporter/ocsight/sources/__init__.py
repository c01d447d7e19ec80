"""OpenCode's data as sources: finding it (`locate`), its database (`database`) and legacy JSON tree
(`legacy`), and staging their records into normalised rows (`staging`, `workers`)."""
