// Alert rules of the partner's fleet: log search alerts over the Log Analytics workspace that
// every customer's app sends to, with one action group mailing the partner. Each query lives
// in infra/queries/ and uses the telemetry field names of shared/telemetry.py.

@description('Resource ID of the Log Analytics workspace the customers\' apps send to.')
param workspaceId string

@description('E-mail address of the partner\'s operations team.')
param partnerEmail string

@description('Azure region of the alert rules (the workspace\'s region).')
param location string

@description('Prefix of the rule names.')
param namePrefix string = 'nexxt365'

@description('Tags for the resources.')
param tags object = {}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${namePrefix}-partner'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: take(namePrefix, 12)
    enabled: true
    emailReceivers: [
      {
        name: 'partner'
        emailAddress: partnerEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var rules = [
  {
    name: 'sync-failing'
    title: 'nexxt365: a sync failed 3 runs in a row'
    description: 'The newest three runs of a customer x sync stopped with an error or were backed off. See docs/operations.md, "A sync is failing".'
    severity: 1
    frequency: 'PT15M'
    window: 'PT6H'
    query: loadTextContent('../queries/alert-sync-failing.kql')
    dimensions: [ 'Tenant', 'Sync' ]
  }
  {
    name: 'secret-expiring'
    title: 'nexxt365: a client secret expires within 14 days'
    description: 'A customer\'s Graph client secret expires within 14 days. See docs/operations.md, "A secret is expiring".'
    severity: 2
    frequency: 'PT1H'
    window: 'P1D'
    query: loadTextContent('../queries/alert-secret-expiring.kql')
    dimensions: [ 'Tenant' ]
  }
  {
    name: 'held-changes'
    title: 'nexxt365: changes held for confirmation for more than a day'
    description: 'Deactivations or deletions wait for an operator\'s confirmation. See docs/operations.md, "Changes are held".'
    severity: 3
    frequency: 'PT1H'
    window: 'P1D'
    query: loadTextContent('../queries/alert-held-changes.kql')
    dimensions: [ 'Tenant', 'Sync' ]
  }
  {
    name: 'calendar-overrun'
    title: 'nexxt365: the calendar run overruns its minute'
    description: 'A calendar run took longer than a minute or a tick found the previous run still busy. See docs/operations.md, "The calendar run overruns".'
    severity: 2
    frequency: 'PT5M'
    window: 'PT15M'
    query: loadTextContent('../queries/alert-calendar-overrun.kql')
    dimensions: [ 'Tenant' ]
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for rule in rules: {
  name: '${namePrefix}-${rule.name}'
  location: location
  tags: tags
  properties: {
    displayName: rule.title
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      workspaceId
    ]
    evaluationFrequency: rule.frequency
    windowSize: rule.window
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [for dimension in rule.dimensions: {
            name: dimension
            operator: 'Include'
            values: [ '*' ]
          }]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    // One mail per problem and day, not one per evaluation.
    muteActionsDuration: 'P1D'
    autoMitigate: false
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

output actionGroupId string = actionGroup.id
