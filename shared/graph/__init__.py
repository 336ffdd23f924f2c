"""Microsoft Graph: the client (msal, paging, delta, $batch) and one module per resource."""
