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
extension microsoftGraphV1

@description('Display name shown in Entra ID > App registrations and Enterprise applications.')
param displayName string = 'nexxt365 (ClearVox Nexxt)'

@description('Immutable key of the app in this tenant; redeploying with the same value updates the same app.')
param uniqueName string = 'nexxt365'

@description('Grant Calendars.Read and Contacts.Read tenant-wide. Set false when Exchange Online RBAC for Applications scopes the mailbox access instead (docs/deploy.md).')
param tenantWideMailboxAccess bool = true

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
  signInAudience: 'AzureADMyOrg'
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

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: app.appId
}

// Users sync: read every user's profile.
resource grantUserReadAll 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  principalId: servicePrincipal.id
  resourceId: graph.id
  appRoleId: userReadAll
}

// Calendar status sync: getSchedule / calendar view of each linked user.
resource grantCalendarsRead 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (tenantWideMailboxAccess) {
  principalId: servicePrincipal.id
  resourceId: graph.id
  appRoleId: calendarsRead
}

// Contacts sync: each linked user's personal contacts.
resource grantContactsRead 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (tenantWideMailboxAccess) {
  principalId: servicePrincipal.id
  resourceId: graph.id
  appRoleId: contactsRead
}

// Calendar status sync with Teams presence: getPresencesByUserId for the linked users (optional).
resource grantPresenceReadAll 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (teamsPresence) {
  principalId: servicePrincipal.id
  resourceId: graph.id
  appRoleId: presenceReadAll
}

output NEXXT365_TENANT string = tenant().tenantId
output NEXXT365_CLIENT_ID string = app.appId
output servicePrincipalObjectId string = servicePrincipal.id
