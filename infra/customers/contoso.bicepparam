// Example customer. One file per customer; the pipeline deploys each file to
// resource group rg-nexxt365-<file name>. No secrets here: the client secret
// and the ClearVox API key go into the customer's Key Vault (docs/deploy.md).
// The next line keeps this example out of the pipeline; drop it in a copy.
// nexxt365: example, not deployed
using '../main.bicep'

param customer = 'contoso'

// From the customer's app registration (Entra ID > App registrations > Overview).
param tenant = 'contoso.onmicrosoft.com'
param clientId = '11111111-2222-3333-4444-555555555555'
param clientSecretExpires = '2027-06-30'
// Or no secret at all: the app registration (in the partner's tenant) trusts
// this app's managed identity (docs/deploy.md, "Sign-in without a secret"):
// param secretless = true

// ClearVox Nexxt: the PBX URL and the Company ID.
param clearvoxUrl = 'https://pbx.example.nl'
param clearvoxAccount = '12345'

// Only members of this Entra group get a ClearVox user; empty means everyone.
param usersGroup = ''

// Filled in by the deploy workflow from repository variables; empty when
// deploying by hand, which then grants these principals nothing.
param deployerPrincipalId = readEnvironmentVariable('AZURE_PRINCIPAL_ID', '')
param secretsOfficerPrincipalId = readEnvironmentVariable('SECRETS_OFFICER_GROUP_ID', '')
