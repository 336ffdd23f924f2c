"""What Entra's answers to a managed identity's client assertion mean, and what to fix.

Sign-in without a secret (shared/credentials.py): the app registration's federated identity
credential must match the identity token exactly: issuer
`https://login.microsoftonline.com/<home tenant ID>/v2.0`, subject the identity's Object
(principal) ID, audience `api://AzureADTokenExchange` (docs/deploy.md).
"""

from __future__ import annotations

_WHERE = "Entra ID > App registrations > {app} > Certificates & secrets > Federated credentials (in the app's home tenant)"
_BICEP = "or redeploy infra/entra-app.bicep with managedIdentityPrincipalId"

FEDERATED_AADSTS_MESSAGES = {
    "70021": "App {app} has no federated identity credential that trusts the managed identity (AADSTS70021). Add one in "
    f"{_WHERE}: issuer https://login.microsoftonline.com/<home tenant ID>/v2.0, subject the identity's Object (principal) ID, "
    f"audience api://AzureADTokenExchange ({_BICEP}).",
    "700211": "The federated credential's issuer does not match the managed identity's token (AADSTS700211). Set Issuer to "
    f"https://login.microsoftonline.com/<home tenant ID>/v2.0 in {_WHERE}; the identity must be in the app registration's "
    "home tenant.",
    "700212": "The federated credential's audience does not match the managed identity's token (AADSTS700212). Set Audience "
    f"to api://AzureADTokenExchange in {_WHERE}.",
    "700213": "The federated credential's subject is not the managed identity (AADSTS700213). Set Subject to the Object "
    "(principal) ID - not the Client ID - of the identity named by NEXXT365_MANAGED_IDENTITY_CLIENT_ID (Managed Identities > "
    f"<identity> > Overview) in {_WHERE}, {_BICEP}.",
    "50013": "Entra could not verify the signature of the client assertion (AADSTS50013). With "
    "NEXXT365_CLIENT_ASSERTION=managed-identity the token must come from the identity endpoint of a managed identity in the app "
    "registration's home tenant.",
    "700024": "The client assertion is expired or not yet valid (AADSTS700024): check the clock of this machine; a "
    "managed identity's token is fetched again on the next run.",
}
