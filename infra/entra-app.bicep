// The customer's app registration for nexxt365, deployed by the customer's
// admin in their own tenant instead of the portal clicks in docs/deploy.md:
// the application, its service principal and admin consent (app role
// assignments on Microsoft Graph) for exactly the three application
// permissions the syncs need, and Presence.Read.All only with
// teamsPresence=true (Teams presence in the calendar status). Nothing else
// is created.
//
//   az deployment group create -g <any resource group> -f infra/entra-app.bicep
//
// The deploying admin needs Application Administrator (or Cloud Application
// Administrator) and, to grant Microsoft Graph application permissions,
// Privileged Role Administrator (or Global Administrator). The resource group
// only hosts the deployment record; it needs an Azure subscription in the
// customer's tenant. The client secret is created afterwards in the portal or
// with `az ad app credential reset`: Bicep cannot create secrets.
//
// Without any secret (docs/deploy.md, "Sign-in without a secret"): deploy this
// file in the tenant of the function app's user-assigned managed identity with
// managedIdentityPrincipalId set; the app then trusts that identity through a
// federated identity credential. For a customer in another tenant, also set
// multitenant=true and consentInThisTenant=false, and let the customer's admin
// grant consent in their tenant.
extension microsoftGraphV1

@description('Display name shown in Entra ID > App registrations and Enterprise applications.')
param displayName string = 'nexxt365 (ClearVox Nexxt)'

@description('Immutable key of the app in this tenant; redeploying with the same value updates the same app.')
param uniqueName string = 'nexxt365'

@description('Grant Calendars.Read and Contacts.Read tenant-wide. Set false when Exchange Online RBAC for Applications scopes the mailbox access instead (docs/deploy.md).')
param tenantWideMailboxAccess bool = true

@description('Principal (object) ID of the function app\'s user-assigned managed identity; when set, a federated identity credential lets it sign in as this app without a secret. The identity must be in this tenant (the app registration\'s home tenant).')
param managedIdentityPrincipalId string = ''

@description('Multitenant app (AzureADMultipleOrgs): customers in other tenants consent to it there. Needed when the function app and its identity run in the partner\'s tenant.')
param multitenant bool = false

@description('Grant the Graph permissions (admin consent) in this tenant. False in the partner\'s tenant when the app only serves customers who consent in their own tenants.')
param consentInThisTenant bool = true

// Managed identity tokens for the exchange: issued by Entra ID of the identity's
// tenant, with the identity's principal ID as subject, for this audience.
var managedIdentityIssuer = 'https://login.microsoftonline.com/${tenant().tenantId}/v2.0'
var tokenExchangeAudience = 'api://AzureADTokenExchange'

@description('Grant Presence.Read.All, for the calendar status to follow Teams presence (NEXXT365_TEAMS_PRESENCE=true). Off by default.')
param teamsPresence bool = false

// Microsoft Graph: the same application ID in every tenant.
var graphAppId = '00000003-0000-0000-c000-000000000000'
// Application permission (app role) IDs of Microsoft Graph.
var userReadAll = 'df021288-bdef-4463-88db-98f22de89214'
var calendarsRead = '798ee544-9d2d-430c-a058-570e29e34338'
var contactsRead = '089fe4d0-434a-44c5-8827-41ba8a0b17f5'
var presenceReadAll = 'a70e0c2d-e793-494c-94c4-118fa0a67f42'

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

resource app 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: multitenant ? 'AzureADMultipleOrgs' : 'AzureADMyOrg'
  // What the portal shows under API permissions; the grants below are the consent.
  requiredResourceAccess: [
    {
      resourceAppId: graphAppId
      resourceAccess: concat([
        {
          id: userReadAll
          type: 'Role'
        }
        {
          id: calendarsRead
          type: 'Role'
        }
        {
          id: contactsRead
          type: 'Role'
        }
      ], teamsPresence ? [
        {
          id: presenceReadAll
          type: 'Role'
        }
      ] : [])
    }
  ]
}

// Sign-in without a secret: the function app's managed identity is this app's credential.
resource managedIdentityCredential 'Microsoft.Graph/applications/federatedIdentityCredentials@v1.0' = if (!empty(managedIdentityPrincipalId)) {
  name: '${app.uniqueName}/nexxt365-function-app'
  description: 'The nexxt365 function app\'s user-assigned managed identity (no client secret).'
  issuer: managedIdentityIssuer
  subject: managedIdentityPrincipalId
  audiences: [
    tokenExchangeAudience
  ]
}

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: app.appId
}

// Users sync: read every user's profile.
resource grantUserReadAll 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (consentInThisTenant) {
  principalId: servicePrincipal.id
  resourceId: graph.id
  appRoleId: userReadAll
}

// Calendar status sync: getSchedule / calendar view of each linked user.
resource grantCalendarsRead 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (consentInThisTenant && tenantWideMailboxAccess) {
  principalId: servicePrincipal.id
  resourceId: graph.id
  appRoleId: calendarsRead
}

// Contacts sync: each linked user's personal contacts.
resource grantContactsRead 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (consentInThisTenant && tenantWideMailboxAccess) {
  principalId: servicePrincipal.id
  resourceId: graph.id
  appRoleId: contactsRead
}

// Calendar status sync with Teams presence: getPresencesByUserId for the linked users (optional).
resource grantPresenceReadAll 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (consentInThisTenant && teamsPresence) {
  principalId: servicePrincipal.id
  resourceId: graph.id
  appRoleId: presenceReadAll
}

output NEXXT365_TENANT string = tenant().tenantId
output NEXXT365_CLIENT_ID string = app.appId
output servicePrincipalObjectId string = servicePrincipal.id
