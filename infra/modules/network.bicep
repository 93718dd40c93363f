// Private networking (main.bicep's privateNetworking=true): a virtual network with a subnet for the
// Function App's outbound traffic (VNet integration; Flex Consumption needs it delegated to
// Microsoft.App/environments) and one for private endpoints of the vault, the storage account (blob, table,
// queue) and the topic, with the private DNS zones that resolve their names to those endpoints inside the
// network. Their public network access is then disabled (in their own modules).
param name string
param location string

@description('Address space of the virtual network.')
param addressPrefix string = '10.20.0.0/16'
@description('Subnet of the Function App\'s VNet integration (within addressPrefix).')
param appSubnetPrefix string = '10.20.0.0/24'
@description('Subnet of the private endpoints (within addressPrefix).')
param endpointSubnetPrefix string = '10.20.1.0/24'

param keyVaultId string
param storageAccountId string
param topicId string

var appSubnet = 'app'
var endpointSubnet = 'endpoints'
// One endpoint per target and sub-resource (group id), each with the private DNS zone of its group.
var targets = [
  { group: 'vault', id: keyVaultId, zone: 'privatelink.vaultcore.azure.net' }
  { group: 'blob', id: storageAccountId, zone: 'privatelink.blob.${environment().suffixes.storage}' }
  { group: 'table', id: storageAccountId, zone: 'privatelink.table.${environment().suffixes.storage}' }
  { group: 'queue', id: storageAccountId, zone: 'privatelink.queue.${environment().suffixes.storage}' }
  { group: 'topic', id: topicId, zone: 'privatelink.eventgrid.azure.net' }
]

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: 'vnet-${name}'
  location: location
  properties: {
    addressSpace: { addressPrefixes: [ addressPrefix ] }
    subnets: [
      {
        name: appSubnet
        properties: {
          addressPrefix: appSubnetPrefix
          delegations: [ { name: 'flex-consumption', properties: { serviceName: 'Microsoft.App/environments' } } ]
        }
      }
      {
        name: endpointSubnet
        properties: {
          addressPrefix: endpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for target in targets: {
  name: target.zone
  location: 'global'
}]

resource links 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (target, i) in targets: {
  parent: zones[i]
  name: vnet.name
  location: 'global'
  properties: {
    registrationEnabled: false
    virtualNetwork: { id: vnet.id }
  }
}]

resource endpoints 'Microsoft.Network/privateEndpoints@2023-11-01' = [for (target, i) in targets: {
  name: 'pe-${name}-${target.group}'
  location: location
  properties: {
    subnet: { id: resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, endpointSubnet) }
    privateLinkServiceConnections: [
      {
        name: 'pe-${name}-${target.group}'
        properties: { privateLinkServiceId: target.id, groupIds: [ target.group ] }
      }
    ]
  }
}]

resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = [for (target, i) in targets: {
  parent: endpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [ { name: target.group, properties: { privateDnsZoneId: zones[i].id } } ]
  }
}]

output appSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, appSubnet)
